"""The torch-free runtime and the two command lines on good and bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from export_helpers import synthetic_utterance

from speechkd.export.runtime import OnnxRecognizer, main, read_audio, resample

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_runtime_imports_without_torch():
    code = (
        "import sys, speechkd.export.runtime, speechkd.export; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture
def student_onnx(exports):
    return f"{exports['student'][0]}/model.int8.onnx"


def test_cli_transcribes_like_the_library(student_onnx, export_corpus, capsys):
    manifest, rows = export_corpus
    path = rows[1]["wav"].replace("$data_root", os.path.dirname(manifest))
    assert main([student_onnx, path]) == 0
    expected = OnnxRecognizer(student_onnx).transcribe(read_audio(path, 16000))
    assert capsys.readouterr().out == f"{path}\t{expected}\n"


def test_cli_stream_prints_partials_then_final(exports, export_corpus, capsys):
    manifest, rows = export_corpus
    path = rows[3]["wav"].replace("$data_root", os.path.dirname(manifest))
    assert (
        main(["--stream", f"{exports['student'][0]}/model.stream.onnx", path, "--block-ms", "80"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    final = OnnxRecognizer(f"{exports['student'][0]}/model.onnx").transcribe(
        read_audio(path, 16000)
    )
    assert lines[-1] == f"{path}\t{final}"
    assert all("\t[" in line for line in lines[:-1])


def test_stream_flag_on_a_whole_model_is_a_clear_error(student_onnx, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, synthetic_utterance(0), 16000)
    assert main(["--stream", student_onnx, str(wav)]) == 2
    assert "model.stream.onnx" in capsys.readouterr().err


@pytest.fixture
def bad_files(tmp_path):
    files = {}
    files["text"] = tmp_path / "notes.wav"
    files["text"].write_text("this is not audio\n")
    files["empty"] = tmp_path / "empty.wav"
    sf.write(files["empty"], np.zeros(0, np.float32), 16000)
    files["stereo"] = tmp_path / "stereo.wav"
    sf.write(files["stereo"], np.stack([synthetic_utterance(0)] * 2, axis=1), 16000)
    files["8k"] = tmp_path / "phone.wav"
    sf.write(files["8k"], synthetic_utterance(1)[::2], 8000)
    files["short"] = tmp_path / "click.wav"
    sf.write(files["short"], np.ones(50, np.float32) * 0.1, 16000)
    return {key: str(path) for key, path in files.items()}


@pytest.mark.parametrize(
    "kind, message",
    [
        ("text", "not an audio file soundfile can read"),
        ("empty", "empty audio (0 samples)"),
        ("stereo", "2 channels, the model needs mono; rerun with --downmix"),
        ("8k", "sample rate 8000 Hz, the model needs 16000 Hz; rerun with --resample"),
        ("short", "shorter than the 160 samples"),
    ],
)
def test_cli_bad_input_is_a_clear_error(student_onnx, bad_files, kind, message, capsys):
    assert main([student_onnx, bad_files[kind]]) == 1
    err = capsys.readouterr().err
    assert message in err and bad_files[kind] in err and "Traceback" not in err


def test_cli_fixes_rate_and_channels_when_asked(student_onnx, bad_files, capsys):
    assert (
        main(["--resample", "--downmix", student_onnx, bad_files["8k"], bad_files["stereo"]]) == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_console_script_on_a_bad_file_exits_nonzero_without_traceback(student_onnx, bad_files):
    result = subprocess.run(
        [sys.executable, "-m", "speechkd.export.runtime", student_onnx, bad_files["text"]],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "speechkd-run: error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("rate_in", [8000, 22050, 44100])
def test_resampling_keeps_the_tone(rate_in, monkeypatch):
    t = np.arange(rate_in) / rate_in
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    for use_soxr in (True, False):
        if not use_soxr:
            monkeypatch.setitem(sys.modules, "soxr", None)  # forces the numpy FFT fallback
        out = resample(tone, rate_in, 16000)
        assert len(out) == 16000
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(int(spectrum.argmax()) - 440) <= 1


def test_speechkd_export_command(experiments, export_corpus, tmp_path, capsys):
    from speechkd.cli import main as speechkd_main

    out = tmp_path / "tdnn"
    status = speechkd_main(
        [
            "export",
            "--model",
            experiments["tdnn"],
            "--out",
            str(out),
            "--manifest",
            export_corpus[0],
            "--parity-utterances",
            "2",
            "--no-torchscript",
        ]
    )
    assert status == 0
    assert sorted(os.listdir(out)) == ["export.json", "model.int8.onnx", "model.onnx", "tokens.txt"]
    assert '"onnx": {"max_abs_diff"' in capsys.readouterr().out


def test_speechkd_export_without_test_set_names_the_fix(experiments, tmp_path, capsys):
    from speechkd.cli import main as speechkd_main

    assert (
        speechkd_main(["export", "--model", experiments["tdnn"], "--out", str(tmp_path / "x")]) == 1
    )
    assert "pass --manifest" in capsys.readouterr().err
