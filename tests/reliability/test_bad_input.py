"""Issue 11, items 9, 11, 12 and 13: bad audio, manifests and model files are refused naming the culprit, or
skipped and counted, before any epoch starts; the command-line tools go on past a bad file."""

import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from export.export_helpers import TEXTS, make_experiment, synthetic_utterance

from speechkd.data.manifest import write_manifest
from speechkd.data.pipelines import (
    BadInputError,
    checked_rows,
    load_audio,
    make_dataset,
    refuse_conflicting_ids,
)
from speechkd.text import TokenInventory


def write_corpus(root, n=4, name="train.csv", prefix="u"):
    """``n`` synthetic FLAC utterances and their manifest; returns (manifest, rows)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        wav = synthetic_utterance(i)
        path = root / "audio" / f"{prefix}{i}.flac"
        sf.write(path, wav, 16000, subtype="PCM_16")
        rows.append({"ID": f"{prefix}{i}", "duration": len(wav) / 16000, "wav": f"$data_root/audio/{prefix}{i}.flac",
                     "spk_id": "s", "lang": "en", "domain": "clean", "wrd": TEXTS[i % len(TEXTS)]})
    write_manifest(root / name, rows)
    return str(root / name), rows


def damage(path, how):
    """Damage an audio file in place as the issue found them."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "corrupt":
        data[len(data) // 3 : len(data) // 3 + 200] = b"\xaa" * 200
    elif how == "nan":
        wav = sf.read(path, dtype="float32")[0]
        wav[100] = np.nan
        sf.write(path.with_suffix(".wav"), wav, 16000, subtype="FLOAT")
        return path.with_suffix(".wav")
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


@pytest.mark.parametrize("how,reason", [("truncated", "corrupt audio"), ("corrupt", "corrupt audio"),
                                        ("nan", "NaN or infinite samples")])
def test_damaged_audio_is_found_up_front_and_skipped_or_refused(tmp_path, caplog, how, reason):
    manifest, rows = write_corpus(tmp_path)
    bad = damage(tmp_path / "audio" / "u2.flac", how)
    rows[2]["wav"] = f"$data_root/audio/{bad.name}"
    write_manifest(manifest, rows)
    assert sf.info(str(bad)).frames > 0  # the header alone says nothing is wrong
    with caplog.at_level(logging.WARNING):
        good, skipped = checked_rows(manifest, str(tmp_path))
    assert [row["ID"] for row in good] == ["u0", "u1", "u3"] and skipped == {reason: 1}
    assert f"{manifest}:4 (u2, {bad})" in caplog.text
    with pytest.raises(BadInputError, match=rf"{manifest}:4 \(u2, .*{bad.name}\): {reason}"):
        checked_rows(manifest, str(tmp_path), strict=True)
    with pytest.raises(BadInputError, match=str(bad)):  # found mid-epoch (file changed after the check)
        load_audio(str(bad))


def test_empty_transcript_is_a_counted_skip(tmp_path, caplog):
    manifest, rows = write_corpus(tmp_path)
    rows[1]["wrd"] = " "
    write_manifest(manifest, rows)
    with caplog.at_level(logging.WARNING):
        dataset = make_dataset(manifest, str(tmp_path), TokenInventory.from_training_texts(TEXTS)[0])
    assert sorted(dataset.data_ids) == ["u0", "u2", "u3"]
    assert "skipped 1 of 4 rows (1 empty transcript)" in caplog.text
    unlabelled = make_dataset(manifest, str(tmp_path), need_text=False)  # unlabelled audio needs no text
    assert len(unlabelled) == 4


def test_manifest_duration_that_disagrees_with_the_file_is_noticed(tmp_path, caplog):
    manifest, rows = write_corpus(tmp_path)
    rows[0]["duration"] += 0.05  # within the tolerance: kept
    rows[3]["duration"] += 0.5
    write_manifest(manifest, rows)
    with caplog.at_level(logging.WARNING):
        good, skipped = checked_rows(manifest, str(tmp_path))
    assert [row["ID"] for row in good] == ["u0", "u1", "u2"]
    assert skipped == {"manifest duration differs from the audio by more than 0.1 s": 1}
    assert "train.csv:5 (u3" in caplog.text


def test_same_id_with_different_audio_in_two_manifests_is_refused(tmp_path):
    train, _ = write_corpus(tmp_path, n=3)
    dev, _ = write_corpus(tmp_path / "dev", n=2, name="dev.csv", prefix="d")
    refuse_conflicting_ids([train, dev], str(tmp_path))
    shared, rows = write_corpus(tmp_path, n=3, name="shared.csv")  # same IDs, same files: allowed
    refuse_conflicting_ids([train, shared], str(tmp_path))
    rows[1]["wav"] = "$data_root/audio/u2.flac"
    write_manifest(tmp_path / "clash.csv", rows)
    with pytest.raises(BadInputError, match=rf"utterance ID 'u1' names .*u1.flac in {train} and .*u2.flac in "
                                            rf"{tmp_path / 'clash.csv'}"):
        refuse_conflicting_ids([train, str(tmp_path / "clash.csv")], str(tmp_path))


def test_utterance_missing_from_the_cache_is_refused_before_the_first_epoch(tmp_path):
    import speechbrain as sb
    from distill.distill_helpers import meta_for

    from speechkd.brains.distill import DistillBrain
    from speechkd.distill import CTCTerm, Objective, PosteriorKL, TeacherTarget
    from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter
    from speechkd.models import StreamingStudent

    manifest, _ = write_corpus(tmp_path, n=3)
    inventory = TokenInventory.from_training_texts(TEXTS)[0]
    model = StreamingStudent(n_tokens=len(inventory), conv_channels=8, gru_hidden=8)
    model_shift = model.frame_shift_ms
    with PosteriorCacheWriter(tmp_path / "cache", meta_for(inventory.symbols, shifts=(model_shift,), k=4)) as writer:
        for utt in ("u0", "u2"):
            writer.add(utt, [torch.log_softmax(torch.randn(5, len(inventory)), -1)])
    checkpointer = sb.utils.checkpoints.Checkpointer(str(tmp_path / "save"), recoverables={"model": model})
    hparams = {"objective": Objective({"ctc": CTCTerm(), "kd": PosteriorKL()}), "teacher_target": TeacherTarget,
               "batch_size": 2, "sorting": "ascending"}
    brain = DistillBrain(modules={"model": model}, opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
                         hparams=hparams, run_opts={"device": "cpu"}, checkpointer=checkpointer,
                         inventory=inventory, teachers=PosteriorCache.open(tmp_path / "cache"))
    train_set = make_dataset(manifest, str(tmp_path), inventory)
    with pytest.raises(ValueError, match=r"1 utterances of the training set \(3 utterances\) are not in the "
                                         r"posterior cache .*cache, e.g. \['u1'\]"):
        brain.fit(range(1), train_set)
    assert not model.normalizer_fitted  # nothing ran


# --------------------------------------------------------------------------- command-line tools
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input") / "student"
    make_experiment(folder, "student", TokenInventory.from_training_texts(TEXTS)[0], [synthetic_utterance(0)])
    return folder


def test_transcribe_goes_on_past_bad_files_and_counts_them(model_folder, tmp_path, capsys):
    from speechkd.cli import main

    _, _ = write_corpus(tmp_path, n=3)
    audio = tmp_path / "audio"
    nan = damage(audio / "u1.flac", "nan")
    truncated = damage(audio / "u2.flac", "truncated")
    files = [audio / "u0.flac", tmp_path / "missing.flac", nan, truncated, audio / "u0.flac"]
    status = main(["transcribe", "--model", str(model_folder), *map(str, files)])
    out, err = capsys.readouterr()
    assert status == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(audio / "u0.flac")] * 2
    assert f"file not found: {tmp_path / 'missing.flac'}" in err and "System error" not in err
    assert f"{nan}: 1 NaN or infinite samples" in err and f"{truncated}: cannot read audio" in err
    assert "3 of 5 files failed" in err


def test_onnx_runtime_refuses_nan_audio_naming_the_file(tmp_path):
    from speechkd.export.runtime import AudioInputError, read_audio

    write_corpus(tmp_path, n=1)
    nan = damage(tmp_path / "audio" / "u0.flac", "nan")
    with pytest.raises(AudioInputError, match=rf"{nan}: 1 NaN or infinite samples"):
        read_audio(str(nan), 16000)


@pytest.mark.parametrize("how", ["missing", "corrupt", "empty"])
def test_export_names_a_missing_or_corrupt_model_checkpoint(model_folder, tmp_path, capsys, how):
    import shutil

    from speechkd.cli import main

    folder = tmp_path / "student"
    shutil.copytree(model_folder, folder)
    (weights,) = folder.glob("save/CKPT+*/model.ckpt")
    if how == "missing":
        weights.unlink()
    else:
        weights.write_bytes(b"" if how == "empty" else b"not a torch file" * 10)
    manifest, _ = write_corpus(tmp_path / "corpus", n=2)
    status = main(["export", "--model", str(folder), "--out", str(tmp_path / "out"), "--manifest", manifest])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    expected = {"missing": f"{weights} is missing",  # an incomplete checkpoint, named
                "empty": f"{weights} is empty",
                "corrupt": f"{weights}: cannot load the model's weights"}[how]
    assert expected in err


def test_rows_an_inventory_without_unk_cannot_encode_are_skipped_up_front(tmp_path, caplog):
    """No ``<unk>`` (e.g. ``student_tokens: teachers``): the row is skipped, named, before any epoch."""
    manifest, rows = write_corpus(tmp_path)
    rows[2]["wrd"] = "forty жж"
    write_manifest(manifest, rows)
    inventory, _ = TokenInventory.from_training_texts(TEXTS)
    assert inventory.unk_index is None
    with caplog.at_level(logging.WARNING):
        dataset = make_dataset(manifest, str(tmp_path), inventory, sort="none")
    assert list(dataset.data_ids) == ["u0", "u1", "u3"]
    assert [item["tokens"].tolist() for item in dataset] == [inventory.encode(TEXTS[i]) for i in (0, 1, 3)]
    assert f"{manifest}:4 (u2" in caplog.text and "'ж'" in caplog.text and "become <unk>" not in caplog.text
    with pytest.raises(BadInputError, match=rf"{manifest}:4 \(u2.*no <unk>"):
        make_dataset(manifest, str(tmp_path), inventory, strict=True)
    # with <unk> the row stays and its characters are counted as <unk>
    with_unk, _ = TokenInventory.from_training_texts(TEXTS, other_texts=["ж"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(make_dataset(manifest, str(tmp_path), with_unk)) == 4
    assert "become <unk>" in caplog.text
    # among labelled IDs, such a row becomes unlabelled
    mixed = make_dataset(manifest, str(tmp_path), inventory, labelled_ids={"u1", "u2"}, sort="none")
    assert [item["labelled"] for item in mixed] == [False, True, False, False]


def test_a_checked_manifest_is_not_decoded_again_unless_a_file_changed(tmp_path, monkeypatch):
    from speechkd.data import pipelines

    manifest, rows = write_corpus(tmp_path)
    reads = []
    real_read = sf.read

    def counting_read(path, *args, **kwargs):
        reads.append(str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pipelines.sf, "read", counting_read)
    inventory, _ = TokenInventory.from_training_texts(TEXTS)
    assert len(make_dataset(manifest, str(tmp_path), inventory)) == 4 and len(reads) == 4
    assert (tmp_path / "train.csv.checked.json").exists()
    reads.clear()
    assert len(make_dataset(manifest, str(tmp_path), inventory)) == 4 and reads == []
    damage(tmp_path / "audio" / "u1.flac", "truncated")  # a changed file is checked again, alone
    _, skipped = checked_rows(manifest, str(tmp_path))
    assert reads == [str(tmp_path / "audio" / "u1.flac")] and skipped == {"corrupt audio": 1}
    reads.clear()
    rows[3]["duration"] += 0.5  # a changed manifest: every row again
    write_manifest(manifest, rows)
    _, skipped = checked_rows(manifest, str(tmp_path))
    assert len(reads) == 4 and skipped == {"corrupt audio": 1,
                                           "manifest duration differs from the audio by more than 0.1 s": 1}
