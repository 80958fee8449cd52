"""recipes/ctc/train.py end to end on the tiny corpus: files, numbers, resume."""

import json
import os
import re

import pytest
from helpers import run_recipe, tiny_overrides

FILES = ["hyperparams.yaml", "log.txt", "train_log.txt", "results.json", "wer_test.txt",
         "tokens.txt", "model.json"]


@pytest.fixture(scope="module")
def tdnn_run(tiny_corpus, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ctc") / "tdnn")
    run_recipe("ctc/train.py", "ctc/tdnn.yaml", **tiny_overrides("tdnn", tiny_corpus, folder))
    return folder


def test_writes_every_file(tdnn_run):
    for name in FILES:
        assert os.path.exists(os.path.join(tdnn_run, name)), name
    assert any(d.startswith("CKPT+") for d in os.listdir(os.path.join(tdnn_run, "save")))


def test_results_json_agrees_with_wer_file(tdnn_run):
    with open(os.path.join(tdnn_run, "results.json")) as fin:
        results = json.load(fin)
    with open(os.path.join(tdnn_run, "wer_test.txt")) as fin:
        header = fin.readline()
    wer = float(re.match(r"%WER ([\d.]+)", header).group(1))
    test = results["sets"]["test"]
    assert test["wer"] == pytest.approx(wer, abs=0.01)
    assert results["frame_shift_ms"] == 20 and results["params"] > 0
    assert set(test["per_lang"]) == {"en", "de", "es", "it", "fr", "ru", "uk"}
    assert set(test["per_domain"]) == {"clean"}


def test_killed_run_resumes_from_last_checkpoint(tdnn_run, tiny_corpus):
    """Rerunning with more epochs continues after the saved epoch instead of starting over."""
    overrides = tiny_overrides("tdnn", tiny_corpus, tdnn_run, epochs=2)
    run_recipe("ctc/train.py", "ctc/tdnn.yaml", **overrides)
    with open(os.path.join(tdnn_run, "train_log.txt")) as fin:
        epochs = [int(m) for m in re.findall(r"^epoch: (\d+)", fin.read(), flags=re.MULTILINE)]
    assert epochs == [1, 2]


def test_transcribe_cli(tdnn_run, tiny_corpus):
    from speechkd.cli import main
    from speechkd.data.manifest import read_manifest

    row = read_manifest(os.path.join(tiny_corpus, "test.csv"))[0]
    wav = row["wav"].replace("$data_root", tiny_corpus)
    assert main(["transcribe", "--model", tdnn_run, wav]) == 0
    assert main(["transcribe", "--model", tdnn_run, "/nonexistent.wav"]) == 1
