"""The main job's stages end to end on the tiny corpus (hparams/pipelines/tiny.yaml)."""

import json
import os
import re

import pytest
import soundfile as sf

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.data.pipelines import resolve_path
from speechkd.metrics import read_utterance_errors
from speechkd.pipeline import run
from speechkd.resampling import resample

REPORT_FILES = ["report.md", "results.json", "wer_vs_size.png", "curves.png"]


def narrowband_manifest(corpus, folder, n=3):
    """The first ``n`` test utterances of ``corpus`` at 8 kHz, as a stand-in real-speech manifest."""
    os.makedirs(folder, exist_ok=True)
    rows = read_manifest(os.path.join(corpus, "test.csv"))[:n]
    for row in rows:
        audio, rate = sf.read(resolve_path(row["wav"], corpus), dtype="float32")
        sf.write(os.path.join(folder, f"{row['ID']}.flac"), resample(audio, rate, 8000), 8000)
        row["wav"] = f"$data_root/{row['ID']}.flac"
    write_manifest(os.path.join(folder, "real.csv"), rows)
    return os.path.join(folder, "real.csv")


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pipeline") / "run")
    real = narrowband_manifest(tiny_corpus, str(tmp_path_factory.mktemp("real8k")))
    overrides = [f"--output_folder={out}", f"--data_folder={tiny_corpus}", f"--real_speech_manifest={real}"]
    pipeline, status = run("hparams/pipelines/tiny.yaml", overrides=overrides)
    return out, pipeline, status, overrides


def test_every_stage_ran_and_wrote_its_marker(tiny_run):
    _, pipeline, status, _ = tiny_run
    assert set(status.values()) == {"done"}
    assert list(status) == ["corpus", "teacher_conformer", "teacher_crdnn", "teacher_tdnn",
                            "baseline", "cache", "distill", "evaluate", "export", "report"]
    for stage in pipeline.stages():
        assert os.path.exists(os.path.join(stage.folder, ".done")), stage.name


def test_report_files_exist_and_agree_with_wer_files(tiny_run):
    out, pipeline, _, _ = tiny_run
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


def test_rerun_skips_every_stage(tiny_run):
    _, _, _, overrides = tiny_run
    _, status = run("hparams/pipelines/tiny.yaml", overrides=overrides)
    assert set(status.values()) == {"skipped"}


def test_real_speech_table_has_every_model_and_the_ensemble(tiny_run):
    out, pipeline, _, _ = tiny_run
    with open(os.path.join(out, "results.json")) as fin:
        real = json.load(fin)["real_speech"]["models"]
    assert sorted(real) == sorted([*pipeline.model_folders(), "ensemble (average)"])
    for name in pipeline.model_folders():
        errors = read_utterance_errors(os.path.join(out, "evaluate", "real", name, "wer_real.txt"))
        edits, words = map(sum, zip(*errors.values()))
        assert real[name]["wer"] == pytest.approx(100.0 * edits / words), name
        assert real[name]["n_utts"] == 3 and real[name]["resampled"] == {"8000": 3}
        assert real[name]["intervals"]["wer"]["rate"] == pytest.approx(real[name]["wer"])
    with open(os.path.join(out, "report.md")) as fin:
        text = fin.read()
    speakers = len({row["spk_id"] for row in read_manifest(pipeline.real_speech_manifest())})
    assert f"## Real speech\n\nReal human recordings, not synthetic: 3 files from {speakers} speaker(s) " \
           "(3 files at 8000 Hz, resampled to 16 kHz" in text
    assert "| ensemble (average) |" in text.split("## Real speech")[1]


def test_a_missing_real_speech_manifest_is_a_note(tmp_path):
    from speechkd.evaluation import evaluate_real_speech
    from speechkd.report import real_speech_rows, real_speech_section

    missing = str(tmp_path / "absent" / "dev.csv")
    evaluate_real_speech({}, None, missing, str(tmp_path / "evaluate"), "average")
    section = real_speech_section(real_speech_rows(str(tmp_path)))
    assert section == f"## Real speech\n\nSkipped: {missing} not found: no real-speech evaluation."
    assert real_speech_section(real_speech_rows(str(tmp_path / "never-evaluated"))) == ""
