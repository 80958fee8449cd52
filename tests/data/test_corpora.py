"""Real-corpus preparation: trees in each layout, built from the tiny corpus, prepare back to its utterances."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_trees import (
    OLD_CV_HEADER,
    audio,
    commonvoice_tree,
    corpus_rows,
    fleurs_tree,
    kaldi_tree,
    lhotse_tree,
    librispeech_tree,
    mls_tree,
)

from speechkd.data.corpora.common import PreparationError
from speechkd.data.corpora.commonvoice import prepare_commonvoice
from speechkd.data.corpora.fleurs import prepare_fleurs
from speechkd.data.corpora.kaldi import prepare_kaldi
from speechkd.data.corpora.lhotse_manifests import prepare_lhotse
from speechkd.data.corpora.librispeech import prepare_librispeech
from speechkd.data.corpora.mls import prepare_mls
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import resolve_path


@pytest.fixture(scope="module")
def english(tiny_corpus):
    return corpus_rows(tiny_corpus, "en")


def prepared_rows(out):
    return {split: {r["ID"]: r for r in read_manifest(out / f"{split}.csv")} for split in ("train", "dev", "test")}


def assert_same_audio(row, out, source, tolerance):
    """Prepared audio is 16 kHz mono and matches the source within ``tolerance`` (RMS error / RMS)."""
    prepared, rate = sf.read(resolve_path(row["wav"], out), dtype="float32")
    assert rate == 16000 and prepared.ndim == 1
    reference = audio(source)
    n = min(len(prepared), len(reference))
    assert abs(len(prepared) - len(reference)) < 0.08 * 16000
    error = np.sqrt(np.mean((prepared[:n] - reference[:n]) ** 2)) / np.sqrt(np.mean(reference[:n] ** 2))
    assert error < tolerance, (row["ID"], error)


def check_prepared(out, expected, tolerance=1e-3):
    rows = {i: r for split_rows in prepared_rows(out).values() for i, r in split_rows.items()}
    assert set(rows) == set(expected)
    for utt_id, source in expected.items():
        assert rows[utt_id]["wrd"] == source["wrd"]
        assert rows[utt_id]["lang"] == source["lang"]
        assert_same_audio(rows[utt_id], out, source, tolerance)
    return rows


def test_librispeech(tmp_path, english):
    expected = librispeech_tree(tmp_path / "LibriSpeech", english)
    report = prepare_librispeech(tmp_path / "LibriSpeech", tmp_path / "out", dev_parts=("dev-clean",))
    rows = check_prepared(tmp_path / "out", expected)
    assert {rows[i]["domain"] for i in expected if expected[i]["domain"] == "other"} == {"other"}
    assert report["splits"]["train"]["utterances"] == len(english["train"])
    assert report["normalization"]["upper case lowered"] == len(expected)
    # equal options: nothing is redone
    assert prepare_librispeech(tmp_path / "LibriSpeech", tmp_path / "out", dev_parts=("dev-clean",)) is None


def test_prepare_command_passes_its_options_to_the_format(tmp_path, english, capsys):
    from speechkd.cli import main

    expected = librispeech_tree(tmp_path / "LibriSpeech", english)
    assert main(["prepare", "librispeech", str(tmp_path / "LibriSpeech"), str(tmp_path / "out"),
                 "--dev_parts=[dev-clean]", "--token_min_count=2"]) == 0
    check_prepared(tmp_path / "out", expected)
    with open(tmp_path / "out" / "prepare_report.json") as fin:
        assert json.load(fin)["token_min_count"] == 2
    assert main(["prepare", "librispeech", str(tmp_path / "LibriSpeech"), str(tmp_path / "x"), "workers=2"]) == 1
    assert "prepare options are --key=value, got 'workers=2'" in capsys.readouterr().err


def test_librispeech_missing_flac_is_counted(tmp_path, english):
    expected = librispeech_tree(tmp_path / "LS", english)
    gone = next(iter(expected))
    next((tmp_path / "LS").rglob(f"{gone}.flac")).unlink()
    report = prepare_librispeech(tmp_path / "LS", tmp_path / "out", dev_parts=("dev-clean",))
    assert report["skipped"] == {"missing audio": 1}
    assert ".trans.txt:1" in report["skipped_examples"]["missing audio"][0]


def test_commonvoice_old_and_new_headers_48k_mp3(tmp_path, tiny_corpus, english):
    expected = commonvoice_tree(tmp_path / "cv", english, "en", new_header=False)
    expected.update(commonvoice_tree(tmp_path / "cv", corpus_rows(tiny_corpus, "uk"), "uk", new_header=True))
    report = prepare_commonvoice(tmp_path / "cv", tmp_path / "out")
    check_prepared(tmp_path / "out", expected, tolerance=0.35)  # mp3 is lossy
    assert report["source_sample_rates"] == {"48000": len(expected)}
    assert report["source_channels"] == {"2": len(expected)}
    assert report["normalization"]["punctuation removed: ."] == len(expected)


def test_commonvoice_validated_split_is_speaker_disjoint(tmp_path, tiny_corpus):
    rows = corpus_rows(tiny_corpus, "uk")
    commonvoice_tree(tmp_path / "cv", rows, "uk", new_header=True)
    prepare_commonvoice(tmp_path / "cv", tmp_path / "out", use_validated=True, dev_fraction=0.2, test_fraction=0.2)
    prepared = prepared_rows(tmp_path / "out")
    speakers = [{r["spk_id"] for r in split.values()} for split in prepared.values()]
    assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert sum(len(split) for split in prepared.values()) == sum(len(v) for v in rows.values())


def test_commonvoice_target_minutes_go_unlabelled(tmp_path, tiny_corpus, english):
    commonvoice_tree(tmp_path / "cv", english, "en", new_header=False)
    uk = corpus_rows(tiny_corpus, "uk")
    commonvoice_tree(tmp_path / "cv", uk, "uk", new_header=True)
    report = prepare_commonvoice(tmp_path / "cv", tmp_path / "out", target_lang="uk", target_minutes=0.05)
    labelled = report["splits"]["train"]["languages"]["uk"]
    assert 3 <= labelled["hours"] * 3600 < 3 + max(r["duration"] for r in uk["train"]) + 0.1
    assert labelled["utterances"] + report["splits"]["unlabelled"]["utterances"] == len(uk["train"])
    assert report["splits"]["train"]["languages"]["en"]["utterances"] == len(english["train"])


def test_commonvoice_bad_input(tmp_path, english):
    expected = commonvoice_tree(tmp_path / "cv", english, "en", new_header=False)
    tsv = tmp_path / "cv" / "en" / "train.tsv"
    lines = tsv.read_text().splitlines()
    clip0 = lines[1].split("\t")[1]
    (tmp_path / "cv" / "en" / "clips" / clip0).unlink()                   # line 2: missing clip
    (tmp_path / "cv" / "en" / "clips" / lines[2].split("\t")[1]).write_bytes(b"not audio")  # line 3
    fields = lines[3].split("\t")
    fields[2] = " ?! "                                                     # line 4: all punctuation
    lines[3] = "\t".join(fields)
    tsv.write_text("\n".join(lines) + "\n")
    report = prepare_commonvoice(tmp_path / "cv", tmp_path / "out")
    assert report["skipped"] == {"missing audio": 1, "unreadable audio": 1,
                                 "transcript empty after normalization": 1}
    assert f"{tsv}:2" in report["skipped_examples"]["missing audio"][0]
    assert f"{tsv}:3" in report["skipped_examples"]["unreadable audio"][0]
    assert f"{tsv}:4" in report["skipped_examples"]["transcript empty after normalization"][0]
    assert sum(len(s) for s in prepared_rows(tmp_path / "out").values()) == len(expected) - 3
    on_disk = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert on_disk["skipped"] == report["skipped"]


def test_commonvoice_unknown_header(tmp_path, english):
    commonvoice_tree(tmp_path / "cv", english, "en", new_header=False)
    tsv = tmp_path / "cv" / "en" / "dev.tsv"
    tsv.write_text(tsv.read_text().replace("sentence", "text", 1))
    with pytest.raises(PreparationError, match=rf"{tsv}:1: header lacks sentence \(got {OLD_CV_HEADER[0]}"):
        prepare_commonvoice(tmp_path / "cv", tmp_path / "out")


def test_mls_opus(tmp_path, english):
    expected = mls_tree(tmp_path / "mls", english)
    prepare_mls(tmp_path / "mls", tmp_path / "out")
    check_prepared(tmp_path / "out", expected, tolerance=0.35)  # opus is lossy


def test_fleurs_shared_sentence_ids(tmp_path, english):
    expected = fleurs_tree(tmp_path / "fleurs", english)
    report = prepare_fleurs(tmp_path / "fleurs", tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert report["normalization"]["punctuation removed: !"] == len(expected)


def test_kaldi_segments_and_pipe(tmp_path, english):
    expected = kaldi_tree(tmp_path / "kaldi", english, pipe=True)
    report = prepare_kaldi(tmp_path / "kaldi", tmp_path / "out", dev_fraction=0.2, test_fraction=0.2)
    rows = check_prepared(tmp_path / "out", expected, tolerance=1e-3)
    assert len(rows) == sum(len(v) for v in english.values())
    speakers = {split: {r["spk_id"] for r in split_rows.values()} for split, split_rows in prepared_rows(tmp_path / "out").items()}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["dev"]
    assert report["skipped"] == {}


def test_kaldi_missing_tool_and_segment_past_end(tmp_path, english):
    kaldi_tree(tmp_path / "kaldi", english, pipe=False)
    segments = tmp_path / "kaldi" / "segments"
    lines = segments.read_text().splitlines()
    utt, rec, start, _ = lines[0].split()
    lines[0] = f"{utt} {rec} {start} 999.0"
    segments.write_text("\n".join(lines) + "\n")
    report = prepare_kaldi(tmp_path / "kaldi", tmp_path / "out")
    assert report["skipped"] == {"segment past the end of its recording": 1}
    assert f"{segments}:1" in report["skipped_examples"]["segment past the end of its recording"][0]
    wav_scp = tmp_path / "kaldi" / "wav.scp"
    wav_scp.write_text(wav_scp.read_text().replace(" /", " no-such-decoder-14 /", 1).replace(".wav\n", ".wav |\n", 1))
    with pytest.raises(PreparationError, match=rf"{wav_scp}:1: the pipe needs 'no-such-decoder-14'"):
        prepare_kaldi(tmp_path / "kaldi", tmp_path / "out2")


def test_lhotse_manifests_and_cuts(tmp_path, english):
    manifests, expected = lhotse_tree(tmp_path / "lhotse", english)
    prepare_lhotse(manifests, tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    prepare_lhotse({"train": str(tmp_path / "lhotse" / "cuts_train.jsonl")}, tmp_path / "out_cuts")
    train_only = {i: r for i, r in expected.items() if r in english["train"]}
    check_prepared(tmp_path / "out_cuts", train_only)


def test_tokens_from_training_text_with_min_count(tmp_path, english):
    manifests, _ = lhotse_tree(tmp_path / "lhotse", english)
    report = prepare_lhotse(manifests, tmp_path / "out", token_min_count=10**6)
    tokens = (tmp_path / "out" / "tokens.txt").read_text().split("\n")
    assert tokens[:2] == ["<blank>", "<space>"] and tokens[-2:] == ["<unk>", ""]
    assert set(report["rare_characters"]) == {c for r in english["train"] for c in r["wrd"]} - {" "}
    shutil.rmtree(tmp_path / "out")


def test_changed_preparation_clears_the_old_audio_and_a_killed_one_resumes(tmp_path, english):
    """Another source (or options) in the same ``out``: no stale FLAC reused; same options after a kill: kept."""
    from speechkd.data.corpora.common import STARTED_FILE, clear_prepared

    first = librispeech_tree(tmp_path / "LS1", english)
    prepare_librispeech(tmp_path / "LS1", tmp_path / "out", dev_parts=("dev-clean",))
    second = tmp_path / "LS2"
    shutil.copytree(tmp_path / "LS1", second)
    for flac in second.rglob("*.flac"):  # same IDs, other audio
        samples, rate = sf.read(flac, dtype="float32")
        sf.write(flac, 0.5 * samples, rate)
    stale = tmp_path / "out" / "audio" / "train" / "gone.flac"
    shutil.copy(next((tmp_path / "out" / "audio" / "train").glob("*.flac")), stale)
    (tmp_path / "out" / "train.csv.checked.json").write_text("{}")
    prepare_librispeech(second, tmp_path / "out", dev_parts=("dev-clean",))
    assert not stale.exists() and not (tmp_path / "out" / "train.csv.checked.json").exists()
    rows = prepared_rows(tmp_path / "out")["train"]
    utt_id = next(i for i in first if i in rows)
    prepared, _ = sf.read(resolve_path(rows[utt_id]["wav"], tmp_path / "out"), dtype="float32")
    source, _ = sf.read(next(second.rglob(f"{utt_id}.flac")), dtype="float32")
    assert np.abs(prepared - source).max() < 1e-3  # the new source's audio, not the old one's

    # a run killed midway (prepare.started of these options, no prepare.done) resumes: FLAC kept
    done = tmp_path / "out" / "prepare.done"
    (tmp_path / "out" / STARTED_FILE).write_text(done.read_text())
    done.unlink()
    kept = Path(resolve_path(rows[utt_id]["wav"], tmp_path / "out"))
    stamp = kept.stat().st_mtime_ns
    prepare_librispeech(second, tmp_path / "out", dev_parts=("dev-clean",))
    assert kept.stat().st_mtime_ns == stamp and done.exists() and not (tmp_path / "out" / STARTED_FILE).exists()
    clear_prepared(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_pipeline_corpus_stage_restart_clears_a_prepared_corpus(tmp_path):
    """``speechkd run --force corpus`` (or changed settings) on a real corpus starts from an empty data folder."""
    import functools

    from speechkd.pipeline import Pipeline

    data = tmp_path / "data"
    (data / "audio" / "train").mkdir(parents=True)
    for name in ("train.csv", "tokens.txt", "prepare.done", "audio/train/a.flac", "notes.txt"):
        (data / name).write_text("x")
    prepare = functools.partial(prepare_librispeech, corpus_folder=str(tmp_path / "LS"), out=str(data))
    hparams = {"output_folder": str(tmp_path / "out"), "data_folder": str(data), "seed": 1,
               "recipes_read_prepared": True, "prepare": prepare}
    Pipeline(hparams).corpus_stage().restart()
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]
    embedded = {**hparams, "recipes_read_prepared": False, "corpus_task": "numbers", "corpus_size": "tiny",
                "corpus_seed": 0}
    assert Pipeline(embedded).corpus_stage().restart is None
