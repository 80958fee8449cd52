"""Export of every architecture: files, metadata, parity, int8, streaming."""

import json
import os

import numpy as np
import pytest
import torch
from export_helpers import TINY_SIZES, synthetic_utterance

from speechkd.decoding import ctc_greedy
from speechkd.experiment import load_model
from speechkd.export.onnx import quantize_int8, read_metadata
from speechkd.export.parity import PARITY_ATOL, ParityError, check_parity
from speechkd.export.runtime import OnnxRecognizer, OnnxStreamer, ctc_greedy_ids


@pytest.mark.parametrize("arch", sorted(TINY_SIZES))
def test_export_writes_checked_files(exports, arch):
    out, report = exports[arch]
    expected = {"model.onnx", "model.int8.onnx", "model.ts", "tokens.txt", "export.json"}
    if arch == "student":
        expected |= {"model.stream.onnx", "model.stream.int8.onnx"}
    assert set(os.listdir(out)) == expected
    assert not os.path.exists(out + ".incomplete")
    for key in ("onnx", "torchscript") + (
        ("stream_onnx", "stream_vs_whole_onnx") if arch == "student" else ()
    ):
        parity = report["parity"][key]
        assert parity["utterances"] == 3 and parity["same_transcripts"] == 3
        assert parity["max_abs_diff"] <= PARITY_ATOL
    assert os.path.getsize(f"{out}/model.int8.onnx") < os.path.getsize(f"{out}/model.onnx")
    assert report["int8"]["whole"]["quantized"].get("MatMul", 0) >= 1
    assert "Conv" not in report["int8"]["whole"]["quantized"]
    with open(f"{out}/export.json") as fin:
        assert json.load(fin)["parity"] == report["parity"]


@pytest.mark.parametrize("arch", sorted(TINY_SIZES))
def test_metadata_describes_the_model(exports, experiments, arch):
    out, _ = exports[arch]
    model, inventory = load_model(experiments[arch])
    meta = read_metadata(f"{out}/model.int8.onnx")
    assert meta["tokens"] == inventory.symbols
    assert meta["sample_rate"] == 16000
    assert meta["frame_shift_ms"] == model.frame_shift_ms
    assert meta["model_name"] == f"tiny-{arch}"
    assert meta["speechkd_graph"] == "whole" and meta["precision"] == "int8"


def test_streaming_metadata_has_chunk(exports):
    meta = read_metadata(f"{exports['student'][0]}/model.stream.onnx")
    assert meta["speechkd_graph"] == "streaming"
    assert meta["chunk_ms"] == 160 and meta["chunk_samples"] == 2560
    assert meta["state_inputs"] == [
        "audio_context",
        "conv_buffer_0",
        "conv_buffer_1",
        "conv_buffer_2",
        "gru_hidden",
    ]


def test_onnx_matches_torch_on_a_padded_batch(exports, experiments):
    """Batch of two lengths: out_lens exact; the valid frames of a causal model are unaffected."""
    out, _ = exports["student"]
    model, _ = load_model(experiments["student"])
    short, long = synthetic_utterance(0), synthetic_utterance(3)
    batch = np.zeros((2, len(long)), np.float32)
    batch[0, : len(short)], batch[1] = short, long
    log_probs, out_lens = OnnxRecognizer(f"{out}/model.onnx").log_probs_batch(
        batch, [len(short), len(long)]
    )
    assert out_lens.tolist() == [model.output_frames(len(short)), model.output_frames(len(long))]
    with torch.no_grad():
        alone = model(torch.from_numpy(short)[None], torch.ones(1))[0].numpy()
    np.testing.assert_allclose(log_probs[0, : out_lens[0]], alone, atol=PARITY_ATOL)


@pytest.mark.parametrize("block", [1000, 2560, 4097])
def test_streaming_equals_whole_for_any_block_size(exports, block):
    out, _ = exports["student"]
    whole = OnnxRecognizer(f"{out}/model.onnx")
    streamer = OnnxStreamer(f"{out}/model.stream.onnx")
    wav = synthetic_utterance(2)
    stream, partials = streamer.start(), []
    for start in range(0, len(wav), block):
        partials.append(stream.accept(wav[start : start + block]))
    final = stream.finish()
    expected = whole.log_probs(wav)
    assert stream.log_probs.shape == expected.shape
    np.testing.assert_allclose(stream.log_probs, expected, atol=PARITY_ATOL)
    assert final == whole.decode(expected)
    assert all(final.startswith(text) for text in partials)


def test_parity_check_fails_loudly_on_a_changed_model(exports, experiments):
    out, _ = exports["tdnn"]
    model, inventory = load_model(experiments["tdnn"])
    with torch.no_grad():
        model.ctc_lin.bias[1] += 0.01
    utterances = [("u0", synthetic_utterance(0))]
    with pytest.raises(ParityError, match=r"onnx: u0: max \|log-prob diff\|"):
        check_parity(model, inventory, {"onnx": f"{out}/model.onnx"}, utterances)


def test_quantizing_conv_is_optional_and_keeps_the_frontend_fp32(exports, tmp_path):
    out, _ = exports["tdnn"]
    summary = quantize_int8(
        f"{out}/model.onnx", str(tmp_path / "conv.int8.onnx"), ("MatMul", "Conv")
    )
    assert summary["quantized"]["Conv"] == 2 + len(TINY_SIZES["tdnn"]["dilations"]) - 1
    assert summary["kept_fp32"].get("Conv", 0) == 0  # the STFT front-end has no Conv at all
    assert os.path.getsize(tmp_path / "conv.int8.onnx") < os.path.getsize(f"{out}/model.int8.onnx")


def test_numpy_greedy_equals_torch_greedy():
    rng = np.random.default_rng(0)
    log_probs = rng.standard_normal((50, 7)).astype(np.float32)
    log_probs[::3, 0] += 3  # plenty of blanks and repeats
    expected = ctc_greedy(torch.from_numpy(log_probs)[None], [50])[0]
    assert ctc_greedy_ids(log_probs)[0] == expected
    first, last = ctc_greedy_ids(log_probs[:20])
    rest, _ = ctc_greedy_ids(log_probs[20:], previous=last)
    assert first + rest == expected
