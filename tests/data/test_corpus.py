"""Tests of the corpus builder on the tiny corpus (built once per module, every installed engine)."""

import argparse
import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkd.data.corpus import SPLIT_VARIANTS, add_cli, build_corpus
from speechkd.data.domains import apply_domain
from speechkd.data.manifest import COLUMNS, read_manifest

OPTIONS = {"task": "numbers", "size": "tiny", "seed": 3, "lang_minutes": {"uk": 1.0},
           "unlabelled_minutes": {"uk": 0.3}, "domains": ("clean", "telephone", "noise"),
           "progress": False}
ID_PATTERN = re.compile(r"^(?P<lang>[a-z]{2})-(?P<spk>[a-z0-9]+)-(?P<n>\d{5})$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "numbers_tiny"
    summary = build_corpus(out=out, workers=1, **OPTIONS)
    return out, summary


def manifest(out, name, allow_empty_wrd=False):
    return read_manifest(Path(out) / name, allow_empty_wrd=allow_empty_wrd)


def wav_path(out, row):
    return Path(row["wav"].replace("$data_root", str(out)))


def tree_digest(folder):
    """sha256 of every file under ``folder`` by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_manifest_schema(corpus):
    out, summary = corpus
    expected = {f"{split}{suffix}.csv" for split in ("train", "dev", "test", "unlabelled")
                for suffix in ("", "_telephone", "_noise")}
    assert {p.name for p in out.glob("*.csv")} == expected
    assert set(summary["manifests"]) == expected
    for name in expected:
        header = (out / name).read_text(encoding="utf-8").splitlines()[0]
        assert header == ",".join(COLUMNS + ("engine", "voice"))
        for row in manifest(out, name):
            match = ID_PATTERN.match(row["ID"])
            assert match and match["lang"] == row["lang"] and match["spk"] == row["spk_id"]
            domain = "clean" if "_" not in name else name[:-4].split("_")[1]
            assert row["domain"] == domain
            assert row["wav"] == f"$data_root/audio/{domain}/{row['lang']}/{row['ID']}.flac"
            engine = "" if row["engine"] == "espeak" else row["engine"]
            assert re.fullmatch(rf"{engine}{row['voice'].lower().replace('-', '')}r\d+p\d+", row["spk_id"])


def test_audio_is_16k_mono_flac_with_manifest_duration(corpus):
    out, _ = corpus
    for row in manifest(out, "dev.csv") + manifest(out, "test_telephone.csv"):
        info = sf.info(str(wav_path(out, row)))
        assert (info.samplerate, info.channels, info.format, info.subtype) == \
            (16000, 1, "FLAC", "PCM_16")
        assert info.frames / 16000 == pytest.approx(row["duration"], abs=1e-4)
        assert 0.3 < row["duration"] < 6.0


def test_domain_manifests_are_parallel_and_frame_aligned(corpus):
    out, _ = corpus
    for split in ("train", "dev", "test", "unlabelled"):
        clean = manifest(out, f"{split}.csv")
        for domain in ("telephone", "noise"):
            other = manifest(out, f"{split}_{domain}.csv")
            assert [r["ID"] for r in other] == [r["ID"] for r in clean]
            assert [r["duration"] for r in other] == [r["duration"] for r in clean]
            assert [r["wrd"] for r in other] == [r["wrd"] for r in clean]
    row = manifest(out, "dev_noise.csv")[0]
    clean_row = manifest(out, "dev.csv")[0]
    assert sf.info(str(wav_path(out, row))).frames == sf.info(str(wav_path(out, clean_row))).frames


def test_stored_domain_audio_equals_on_the_fly_transform(corpus):
    out, summary = corpus
    for clean_row, noisy_row in list(zip(manifest(out, "test.csv"),
                                         manifest(out, "test_noise.csv")))[:5]:
        clean, _ = sf.read(str(wav_path(out, clean_row)), dtype="float32")
        stored, _ = sf.read(str(wav_path(out, noisy_row)), dtype="float32")
        fresh = apply_domain(clean, 16000, "noise", summary["seed"], clean_row["ID"])
        if np.max(np.abs(fresh)) < 1.0:  # the writer only rescales clipping audio
            assert np.max(np.abs(fresh - stored)) <= 1 / 32768 + 1e-7


def test_train_dev_test_speakers_are_disjoint(corpus):
    out, _ = corpus
    speakers = {split: {r["spk_id"] for r in manifest(out, f"{split}.csv")}
                for split in ("train", "dev", "test")}
    for lang in ("en", "ru", "uk"):
        assert len({r["spk_id"] for r in manifest(out, "train.csv") if r["lang"] == lang}) == 3
        assert len({r["spk_id"] for r in manifest(out, "dev.csv") if r["lang"] == lang}) == 2
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    variants = {split: {r["voice"] for r in manifest(out, f"{split}.csv")
                        if r["engine"] == "espeak"} for split in speakers}
    assert variants["test"] <= set(SPLIT_VARIANTS["test"])
    assert not variants["test"] & set(SPLIT_VARIANTS["train"])


def test_every_language_and_split_present(corpus):
    out, summary = corpus
    for split in ("train", "dev", "test"):
        langs = {r["lang"] for r in manifest(out, f"{split}.csv")}
        assert langs == {"en", "de", "es", "it", "fr", "ru", "uk"}
        for stats in summary["splits"][split].values():
            assert stats["utterances"] >= 2


def test_language_minutes_are_honoured(corpus):
    out, summary = corpus
    train = manifest(out, "train.csv")
    seconds = {lang: sum(r["duration"] for r in train if r["lang"] == lang)
               for lang in summary["languages"]}
    longest = max(r["duration"] for r in train)
    assert 60.0 <= seconds["uk"] < 60.0 + longest
    for lang in ("en", "de", "es", "it", "fr", "ru"):
        assert 24.0 <= seconds[lang] < 24.0 + longest
    assert summary["splits"]["train"]["uk"]["seconds"] == pytest.approx(seconds["uk"], abs=0.01)
    for split in ("dev", "test"):
        for lang in summary["languages"]:
            total = sum(r["duration"] for r in manifest(out, f"{split}.csv") if r["lang"] == lang)
            assert 6.0 <= total < 6.0 + longest


def test_unlabelled_has_new_speakers_of_the_train_voices(corpus):
    """The transfer set: texts, utterances and pseudo-speakers disjoint from train, drawn
    from train's voices (never a dev or test voice), so the teachers label other voices."""
    out, summary = corpus
    train, unlabelled = manifest(out, "train.csv"), manifest(out, "unlabelled.csv")
    assert {r["lang"] for r in unlabelled} == {"uk"}
    assert 18.0 <= sum(r["duration"] for r in unlabelled) < 24.0
    assert not {r["ID"] for r in unlabelled} & {r["ID"] for r in train}
    assert not {r["spk_id"] for r in unlabelled} & {r["spk_id"] for r in train}
    assert {r["spk_id"] for r in unlabelled} == \
        {s["name"] for s in summary["speakers"]["unlabelled"]["uk"]}
    assert len({r["spk_id"] for r in unlabelled}) == 3  # the tiny size's three
    held_out = {(r["engine"], r["voice"]) for name in ("dev.csv", "test.csv")
                for r in manifest(out, name)}
    assert not {(r["engine"], r["voice"]) for r in unlabelled} & held_out
    assert {r["voice"] for r in unlabelled if r["engine"] == "espeak"} <= set(SPLIT_VARIANTS["train"])
    assert all(r["wrd"] for r in unlabelled)


def test_too_many_speakers_for_the_voices_is_an_error_not_a_hang():
    from speechkd.data.corpus import PITCHES, RATES, _espeak_voices

    pairs = len(RATES) * len(PITCHES)  # pseudo-speakers one espeak-ng variant has
    assert len(_espeak_voices("small", 0, "dev", 2 * pairs)) == 2 * pairs  # dev: two variants
    with pytest.raises(ValueError, match=f"need {pairs + 1} rate/pitch pairs"):
        _espeak_voices("small", 0, "dev", 2 * pairs + 1)


def test_transcripts_are_normalized_text(corpus):
    from speechkd.text import alphabet, normalize

    out, _ = corpus
    for row in manifest(out, "train.csv"):
        assert row["wrd"] == normalize(row["wrd"], row["lang"])
        assert set(row["wrd"]) <= alphabet(row["lang"]), row
        assert 1 <= len(row["wrd"].split()) <= 14


def test_summary_counts_match_manifests(corpus):
    out, summary = corpus
    assert json.loads((out / "corpus.json").read_text(encoding="utf-8")) == summary
    rows = [r for split in ("train", "dev", "test", "unlabelled")
            for r in manifest(out, f"{split}.csv")]
    assert summary["total"]["utterances"] == len(rows)
    assert summary["total"]["hours"] == pytest.approx(sum(r["duration"] for r in rows) / 3600,
                                                      abs=1e-3)
    assert summary["task"] == "numbers" and summary["seed"] == 3
    assert summary["domains"] == ["clean", "telephone", "noise"]


def test_build_is_deterministic_across_workers_and_resumes(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "again"
    build_corpus(out=copy, workers=2, **OPTIONS)
    reference = tree_digest(out)
    assert tree_digest(copy) == reference
    # a killed build: summary gone, a few audio files missing -> rebuilt identically
    (copy / "corpus.json").unlink()
    removed = sorted((copy / "audio").rglob("*.flac"))[::40]
    for path in removed:
        path.unlink()
    build_corpus(out=copy, workers=1, **OPTIONS)
    assert tree_digest(copy) == reference


def test_rebuild_with_same_options_is_skipped(corpus):
    out, summary = corpus
    stamp = (out / "train.csv").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_corpus(out=out, **OPTIONS) == summary
    assert time.perf_counter() - start < 2.0
    assert (out / "train.csv").stat().st_mtime_ns == stamp


def test_refuses_folder_built_with_another_seed(corpus):
    out, _ = corpus
    with pytest.raises(ValueError, match="seed: 3 there, 4 asked"):
        build_corpus(out=out, **{**OPTIONS, "seed": 4})


def test_rejects_unknown_language_and_domain(tmp_path):
    with pytest.raises(ValueError, match="'xx'"):
        build_corpus("numbers", "tiny", tmp_path, languages=["en", "xx"], progress=False)
    with pytest.raises(ValueError, match="unknown domain 'phone'"):
        build_corpus("numbers", "tiny", tmp_path, domains=("clean", "phone"), progress=False)


def test_cli_registers_corpus_build(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["corpus", "build", "--task", "numbers", "--size", "tiny",
                              "--out", str(out), "--langs", "en,uk", "--lang-minutes", "uk=0.2",
                              "--domains", "clean,reverb", "--seed", "1", "--quiet",
                              "--engines", "espeak"])
    assert args.func(args) == 0
    summary = json.loads((out / "corpus.json").read_text())
    assert summary["languages"] == ["en", "uk"] and summary["domains"] == ["clean", "reverb"]
    assert 12.0 <= summary["splits"]["train"]["uk"]["seconds"] < 20.0
    assert (out / "test_reverb.csv").exists()
    assert summary["engines"] == ["espeak"]
    assert {r["engine"] for r in manifest(out, "train.csv")} == {"espeak"}
    assert "corpus numbers/tiny seed 1" in capsys.readouterr().out


def test_sentences_task_uses_disjoint_normalized_texts(tmp_path):
    from speechkd.data.sentences import fortune_files
    from speechkd.text import alphabet

    try:
        fortune_files("en"), fortune_files("bg")
    except FileNotFoundError as error:
        pytest.skip(str(error))
    out = tmp_path / "sentences"
    build_corpus("sentences", "tiny", out, languages=["en", "bg"], progress=False)
    texts = {split: {r["wrd"] for r in manifest(out, f"{split}.csv")}
             for split in ("train", "dev", "test")}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"]
    for row in manifest(out, "train.csv"):
        assert 3 <= len(row["wrd"].split()) <= 20
        assert set(row["wrd"]) <= alphabet(row["lang"])


def test_missing_fortune_packages_name_the_install_command(tmp_path):
    from speechkd.data.sentences import fortune_files

    with pytest.raises(FileNotFoundError, match="apt-get install -y fortunes fortunes-de"):
        fortune_files("de", root=tmp_path)
