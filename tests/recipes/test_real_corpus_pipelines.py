"""`speechkd run` end to end on a tiny LibriSpeech-layout tree and a tiny Common-Voice-layout tree."""

import json
import os

import pytest
from data.corpus_trees import commonvoice_tree, corpus_rows, librispeech_tree

from speechkd.data.manifest import read_manifest
from speechkd.pipeline import run

TINY = ["--train_threads=1", "--prepare_workers=1", "--token_min_count=1", "--ensemble_strategies=[average]", "--strategy=average",
        ("--student={overrides: {number_of_epochs: 1, conv_channels: 16, gru_hidden: 16, gru_layers: 1, "
         "dynamic_batching: {max_batch_length: 6, num_buckets: 2}}}"),
        "--distill={overrides: {alpha: 0.5}}"]
TINY_TEACHERS = {
    "conformer": "{number_of_epochs: 1, d_model: 32, num_layers: 1, d_ffn: 64, conv_channels: 8, "
                 "dynamic_batching: {max_batch_length: 6, num_buckets: 2}}",
    "crdnn": "{number_of_epochs: 1, cnn_channels: [8, 8], rnn_layers: 1, rnn_neurons: 32, dnn_neurons: 32}",
    "tdnn": "{number_of_epochs: 1, channels: 32, dilations: [1, 2]}",
}


def teachers_override(names):
    return "--teachers={" + ", ".join(f"{n}: {{overrides: {TINY_TEACHERS[n]}}}" for n in names) + "}"


def check_run(out, status, data_folder, domains):
    assert set(status.values()) == {"done"}
    with open(os.path.join(out, "results.json")) as fin:
        report = json.load(fin)
    assert "student_kd" in report["models"]
    test_rows = read_manifest(os.path.join(data_folder, "test.csv"))
    assert {row["domain"] for row in test_rows} == domains
    with open(os.path.join(out, "distill", "results.json")) as fin:
        assert set(json.load(fin)["sets"]["test"]["per_domain"]) == domains


@pytest.mark.parametrize("layout", ["librispeech", "commonvoice"])
def test_speechkd_run_on_a_real_layout(layout, tiny_corpus, tmp_path):
    data_folder = str(tmp_path / "prepared")
    common = [f"--output_folder={tmp_path / 'run'}", f"--data_folder={data_folder}", *TINY]
    if layout == "librispeech":
        librispeech_tree(tmp_path / "LibriSpeech", corpus_rows(tiny_corpus, "en"))
        _, status = run("hparams/pipelines/librispeech.yaml", overrides=[
            *common, f"--corpus_folder={tmp_path / 'LibriSpeech'}", "--dev_parts=[dev-clean]",
            teachers_override(["conformer", "crdnn", "tdnn"])])
        check_run(str(tmp_path / "run"), status, data_folder, {"clean", "other"})
    else:
        commonvoice_tree(tmp_path / "cv", corpus_rows(tiny_corpus, "ru"), "ru", new_header=False)
        commonvoice_tree(tmp_path / "cv", corpus_rows(tiny_corpus, "uk"), "uk", new_header=True)
        _, status = run("hparams/pipelines/commonvoice_low_resource.yaml", overrides=[
            *common, f"--corpus_folder={tmp_path / 'cv'}", "--languages=[ru, uk]", "--target_minutes=0.1",
            teachers_override(["conformer", "crdnn"])])
        check_run(str(tmp_path / "run"), status, data_folder, {"clean"})
        unlabelled = {row["ID"] for row in read_manifest(os.path.join(data_folder, "unlabelled.csv"),
                                                         allow_empty_wrd=True)}
        trained_on = {row["ID"] for row in read_manifest(
            os.path.join(tmp_path, "run", "distill", "train_and_unlabelled.csv"), allow_empty_wrd=True)}
        assert unlabelled and unlabelled < trained_on  # the student learnt from the unlabelled clips too
