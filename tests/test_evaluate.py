"""``speechkd evaluate`` and ``speechkd transcribe --resample``: any manifest, any rate, one resampler everywhere."""

import logging
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from export.export_helpers import TEXTS, make_experiment, synthetic_utterance

from speechkd.data.manifest import write_manifest
from speechkd.data.pipelines import load_audio, make_dataset
from speechkd.evaluation import evaluate_manifest
from speechkd.experiment import load_model
from speechkd.inference import transcribe_files
from speechkd.metrics import read_utterance_errors
from speechkd.text import TokenInventory

N_UTTS = 5


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate") / "tdnn"
    inventory = TokenInventory.from_training_texts(TEXTS)[0]
    make_experiment(folder, "tdnn", inventory, [synthetic_utterance(i) for i in range(3)])
    return str(folder)


def write_8k_corpus(root, texts):
    """8 kHz FLAC utterances and their manifest (``$data_root`` = ``root``); returns (manifest, rows)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        wav = synthetic_utterance(i, sample_rate=8000)
        sf.write(root / "audio" / f"u{i}.flac", wav, 8000, subtype="PCM_16")
        rows.append({"ID": f"u{i}", "duration": len(wav) / 8000, "wav": f"$data_root/audio/u{i}.flac",
                     "spk_id": "s", "lang": "en" if i % 2 == 0 else "es", "domain": "real", "wrd": text})
    write_manifest(root / "dev.csv", rows)
    return str(root / "dev.csv"), rows


@pytest.fixture(scope="module")
def perfect_corpus(model_folder, tmp_path_factory):
    """8 kHz manifest whose references are what the model hears (``transcribe --resample``): 0 % WER by construction."""
    root = tmp_path_factory.mktemp("perfect")
    manifest, rows = write_8k_corpus(root, ["placeholder"] * N_UTTS)
    paths = [str(root / "audio" / f"u{i}.flac") for i in range(N_UTTS)]
    hyps = [text for _path, text, _error in transcribe_files(model_folder, paths, resample=True)]
    assert all(h.strip() for h in hyps), hyps  # a random-weight model says something
    manifest, rows = write_8k_corpus(root, hyps)
    return manifest, rows, root


def test_perfect_transcripts_give_zero_wer_and_the_recipes_wer_file(model_folder, perfect_corpus, tmp_path):
    manifest, rows, _root = perfect_corpus
    result = evaluate_manifest(model_folder, manifest, resample=True, output=str(tmp_path))
    assert result["wer"] == 0.0 and result["cer"] == 0.0 and result["n_utts"] == N_UTTS
    assert result["resampled"] == {"8000": N_UTTS} and result["skipped"] == {}
    assert result["intervals"]["wer"] == {"rate": 0.0, "low": 0.0, "high": 0.0, "n_utts": N_UTTS}
    assert sorted(result["intervals"]["per_lang"]) == ["en", "es"]
    assert read_utterance_errors(tmp_path / "wer_dev.txt") == {
        row["ID"]: (0, len(row["wrd"].split())) for row in rows}


def test_one_wrong_word_costs_its_share_at_any_batch_size(model_folder, perfect_corpus, caplog):
    _manifest, rows, root = perfect_corpus
    wrong = [dict(row) for row in rows]
    wrong[0]["wrd"] = "zzzz " + " ".join(rows[0]["wrd"].split()[1:])
    write_manifest(root / "wrong.csv", wrong)
    words = sum(len(row["wrd"].split()) for row in rows)
    for batch_size in (1, 16):
        with caplog.at_level(logging.WARNING):
            result = evaluate_manifest(model_folder, str(root / "wrong.csv"), resample=True, batch_size=batch_size)
        assert "4 characters are not in the token inventory and are scored as errors: {'z': 4}" in caplog.text
        assert result["word_edits"] == 1 and result["wer"] == pytest.approx(100.0 / words)
        assert result["unknown_characters"] == 4  # 'z' is not in the model's inventory: scored, not dropped
        en_words = sum(len(row["wrd"].split()) for row in rows if row["lang"] == "en")
        assert result["per_lang"]["en"]["wer"] == pytest.approx(100.0 / en_words)
        assert result["per_lang"]["es"]["wer"] == 0.0


def test_other_rates_are_refused_without_resample(model_folder, perfect_corpus, capsys):
    from speechkd.cli import main

    manifest, _rows, _root = perfect_corpus
    with pytest.raises(ValueError, match=rf"{N_UTTS} of {N_UTTS} files are not at the model's 16000 Hz "
                                         rf"\({N_UTTS} at 8000 Hz\); rerun with --resample"):
        evaluate_manifest(model_folder, manifest)
    assert main(["evaluate", "--model", model_folder, "--manifest", manifest]) == 1
    assert "rerun with --resample" in capsys.readouterr().err


def test_cli_prints_the_table_and_notes_the_resampling(model_folder, perfect_corpus, tmp_path, capsys, caplog):
    from speechkd.cli import main

    manifest, _rows, _root = perfect_corpus
    with caplog.at_level(logging.INFO):
        status = main(["evaluate", "--model", model_folder, "--manifest", manifest, "--resample",
                       "--threads", "1", "--batch_size", "4", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert f"resampling {N_UTTS} of {N_UTTS} files to 16000 Hz ({N_UTTS} from 8000 Hz)" in caplog.text
    assert re.search(r"\| all \| 5 \| 0\.0 \[0\.0, 0\.0\] \| 0\.0 \[0\.0, 0\.0\] \|", out), out
    assert (tmp_path / "wer_dev.txt").exists() and (tmp_path / "evaluate_dev.json").exists()


def test_lexicon_decoding_says_only_lexicon_words_and_agrees_on_every_path(model_folder, perfect_corpus, tmp_path,
                                                                            capsys):
    """evaluate (batch 4) and transcribe (one file at a time) give the same lexicon transcripts."""
    from speechkd.cli import main
    from speechkd.metrics import ErrorRates

    manifest, rows, root = perfect_corpus
    lexicon_rows = [dict(row, wrd="zero one") for row in rows[:2]] + [rows[2]]
    write_manifest(root / "lexicon.csv", lexicon_rows)
    vocabulary = {word for row in lexicon_rows for word in row["wrd"].split()}
    assert main(["evaluate", "--model", model_folder, "--manifest", manifest, "--resample", "--batch_size", "4",
                 "--output", str(tmp_path), "--lexicon", str(root / "lexicon.csv")]) == 0
    assert "(lexicon decoding)" in capsys.readouterr().out
    assert (tmp_path / "wer_dev_lexicon.txt").exists() and (tmp_path / "evaluate_dev_lexicon.json").exists()
    result = evaluate_manifest(model_folder, manifest, resample=True, batch_size=4, lexicon=str(root / "lexicon.csv"))
    assert result["decoding"] == "lexicon"
    paths = [str(root / "audio" / f"u{i}.flac") for i in range(N_UTTS)]
    said = [text for _path, text, _error in transcribe_files(model_folder, paths, resample=True,
                                                             lexicon=str(root / "lexicon.csv"))]
    assert any(said) and all(set(text.split()) <= vocabulary for text in said), said
    one_by_one = ErrorRates()
    one_by_one.append([row["ID"] for row in rows], [row["wrd"] for row in rows], said)
    assert one_by_one.summary()["wer"] == pytest.approx(result["wer"])
    assert one_by_one.summary()["cer"] == pytest.approx(result["cer"])


def test_bad_rows_are_skipped_counted_and_named(model_folder, perfect_corpus, tmp_path, caplog):
    _manifest, rows, root = perfect_corpus
    nan = tmp_path / "nan.wav"
    wav = synthetic_utterance(0, sample_rate=8000)
    wav[10] = np.nan
    sf.write(nan, wav, 8000, subtype="FLOAT")
    bad = [*rows,
           {**rows[0], "ID": "missing", "wav": "$data_root/audio/missing.flac"},
           {**rows[0], "ID": "nan", "wav": str(nan)},
           {**rows[1], "ID": "silent", "wrd": ""}]
    write_manifest(root / "bad.csv", bad)
    with caplog.at_level(logging.WARNING):
        result = evaluate_manifest(model_folder, str(root / "bad.csv"), resample=True)
    assert result["n_utts"] == N_UTTS and result["wer"] == 0.0
    assert result["skipped"] == {"missing audio": 1, "NaN or infinite samples": 1, "empty transcript": 1}
    assert f"{root / 'bad.csv'}:{N_UTTS + 2} (missing," in caplog.text
    assert f"{root / 'bad.csv'}:{N_UTTS + 4} (silent," in caplog.text


def test_transcribe_refuses_or_resamples_8k(model_folder, perfect_corpus, capsys):
    from speechkd.cli import main

    _manifest, rows, root = perfect_corpus
    path = str(root / "audio" / "u0.flac")
    assert main(["transcribe", "--model", model_folder, path]) == 1
    assert "sample rate 8000 Hz, expected 16000 Hz (rerun with --resample" in capsys.readouterr().err
    assert main(["transcribe", "--model", model_folder, "--resample", "--threads", "1", path]) == 0
    assert capsys.readouterr().out == f"{path}\t{rows[0]['wrd']}\n"


def test_an_8k_file_becomes_the_same_16k_tensor_on_every_path(model_folder, perfect_corpus, tmp_path):
    """Training pipeline, ``evaluate`` (the same dataset), ``transcribe --resample`` and ``speechkd-run --resample``."""
    from speechkd.export.onnx import export_whole
    from speechkd.export.runtime import OnnxRecognizer, read_audio

    manifest, rows, root = perfect_corpus
    path = str(root / "audio" / "u1.flac")
    model, inventory = load_model(model_folder)
    dataset = make_dataset(manifest, str(root), inventory, sort="none", resample=True)
    training = dataset[1]["sig"]
    transcribe = load_audio(path, 16000, resample=True)
    runtime = read_audio(path, 16000, resample_to_rate=True)
    assert training.shape == (2 * sf.info(path).frames,)
    assert torch.equal(training, transcribe) and np.array_equal(training.numpy(), runtime)

    export_whole(model, inventory, str(tmp_path / "model.onnx"), "tiny")
    recognizer = OnnxRecognizer(str(tmp_path / "model.onnx"))
    with torch.no_grad():
        torch_log_probs = model(training[None], torch.ones(1))[0]
    assert np.allclose(recognizer.log_probs(runtime), torch_log_probs.numpy(), atol=1e-3)
    assert recognizer.transcribe(runtime) == rows[1]["wrd"]
