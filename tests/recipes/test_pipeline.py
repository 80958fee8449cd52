"""The main job's stages end to end on the tiny corpus (hparams/pipelines/tiny.yaml)."""

import json
import os
import re

import pytest

from speechkd.pipeline import run

REPORT_FILES = ["report.md", "results.json", "wer_vs_size.png", "curves.png"]


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pipeline") / "run")
    pipeline, status = run("hparams/pipelines/tiny.yaml",
                           overrides=[f"--output_folder={out}", f"--data_folder={tiny_corpus}"])
    return out, pipeline, status


def test_every_stage_ran_and_wrote_its_marker(tiny_run):
    _, pipeline, status = tiny_run
    assert set(status.values()) == {"done"}
    assert list(status) == ["corpus", "teacher_conformer", "teacher_crdnn", "teacher_tdnn",
                            "baseline", "cache", "distill", "evaluate", "export", "report"]
    for stage in pipeline.stages():
        assert os.path.exists(os.path.join(stage.folder, ".done")), stage.name


def test_report_files_exist_and_agree_with_wer_files(tiny_run):
    out, pipeline, _ = tiny_run
    for name in REPORT_FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "results.json")) as fin:
        report = json.load(fin)
    for name, folder in pipeline.model_folders().items():
        with open(os.path.join(folder, "wer_test.txt")) as fin:
            wer = float(re.match(r"%WER ([\d.]+)", fin.readline()).group(1))
        assert report["models"][name]["wer"] == pytest.approx(wer, abs=0.01), name
    teachers = ["conformer", "crdnn", "tdnn"]
    ensemble = report["models"]["ensemble (average)"]
    assert ensemble["params"] == sum(report["models"][t]["params"] for t in teachers)
    ratio = ensemble["params"] / report["models"]["student_kd"]["params"]
    assert report["summary"]["compression_vs_ensemble"] == pytest.approx(ratio)
    with open(os.path.join(out, "report.md")) as fin:
        text = fin.read()
    assert "| student_kd |" in text and "smaller than the ensemble" in text
    assert os.path.exists(os.path.join(out, "export", "model.int8.onnx"))


def test_rerun_skips_every_stage(tiny_run, tiny_corpus):
    out, _, _ = tiny_run
    _, status = run("hparams/pipelines/tiny.yaml",
                    overrides=[f"--output_folder={out}", f"--data_folder={tiny_corpus}"])
    assert set(status.values()) == {"skipped"}
