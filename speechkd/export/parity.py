"""Export-time parity check: exported graphs against the PyTorch model on real utterances.

Required (a failure raises :class:`ParityError`):

- ONNX fp32 whole-utterance log-probs within ``atol`` (1e-4) max absolute
  difference of PyTorch eager running the very module that was exported
  (its front-end computes the spectrum with ``torch.stft``, as the ONNX
  ``STFT`` op does), and identical greedy transcripts;
- that module's greedy transcripts equal the trained model's (whose
  front-end uses an FFT: the two spectra differ by float32 rounding, which
  the log of near-silent frames can raise to ~1e-4 in the log-probs; that
  difference is reported as ``graph_vs_training_model``);
- the same for the TorchScript file, when there is one;
- the streaming ONNX graph fed chunk by chunk (through the torch-free
  runtime) equals the whole-utterance output, to the same tolerance and
  transcripts.

Reported, not required: the int8 files' largest log-prob difference and how
many of their greedy transcripts equal fp32's (their WER is measured by
``benchmarks/bench_export.py``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from speechkd.data.pipelines import checked_rows, load_audio, resolve_path
from speechkd.decoding import ctc_greedy
from speechkd.export.graphs import WholeUtteranceGraph
from speechkd.export.runtime import OnnxRecognizer, OnnxStreamer
from speechkd.models.base import AcousticModel
from speechkd.text import TokenInventory

PARITY_ATOL = 1e-4


class ParityError(ValueError):
    """An exported graph disagrees with the PyTorch model; the message lists every failure."""


def parity_utterances(
    manifest: str, data_root: str | None = None, count: int = 8
) -> list[tuple[str, np.ndarray]]:
    """``count`` usable utterances spread evenly over a manifest.

    Parameters
    ----------
    manifest : str
        SpeechBrain CSV (the test set).
    data_root : str, optional
        ``$data_root`` of the manifest (default: its folder, the corpus layout).
    count : int
        Utterances to take.

    Returns
    -------
    list of (str, np.ndarray)
        Utterance id and (samples,) float32 waveform.
    """
    data_root = data_root or os.path.dirname(os.path.abspath(manifest))
    rows, _ = checked_rows(manifest, data_root, need_text=False)
    if not rows:
        raise ParityError(f"{manifest}: no usable utterance for the parity check")
    step = max(1, len(rows) // count)
    chosen = rows[::step][:count]
    return [(row["ID"], load_audio(resolve_path(row["wav"], data_root)).numpy()) for row in chosen]


@torch.no_grad()
def torch_log_probs(model: AcousticModel, wav: np.ndarray) -> np.ndarray:
    """(samples,) -> (frames, vocab) log-probs of the eager PyTorch model."""
    return model(torch.from_numpy(wav)[None], torch.ones(1))[0].numpy()


@torch.no_grad()
def graph_log_probs(graph, wav: np.ndarray) -> np.ndarray:
    """(samples,) -> (frames, vocab) log-probs of the exported wrapper run eagerly in PyTorch."""
    log_probs, out_lens = graph(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    return log_probs[0, : int(out_lens[0])].numpy()


def greedy_text(log_probs: np.ndarray, inventory: TokenInventory) -> str:
    """Greedy transcript with the training-side decoder (speechkd.decoding)."""
    ids = ctc_greedy(torch.from_numpy(log_probs)[None], [len(log_probs)])[0]
    return inventory.decode(ids)


def _compare(name, outputs, references, inventory, atol, required, failures) -> dict:
    """Compare per-utterance log-probs of one engine to references; record failures."""
    worst, same_text = 0.0, 0
    for (utt_id, got), expected in zip(outputs, references):
        if got.shape != expected.shape:
            failures.append(f"{name}: {utt_id}: shape {got.shape} != {expected.shape}")
            continue
        diff = float(np.abs(got - expected).max()) if got.size else 0.0
        worst = max(worst, diff)
        texts = greedy_text(got, inventory), greedy_text(expected, inventory)
        same_text += texts[0] == texts[1]
        if required and diff > atol:
            failures.append(f"{name}: {utt_id}: max |log-prob diff| {diff:.2e} > {atol:.0e}")
        if required and texts[0] != texts[1]:
            failures.append(f"{name}: {utt_id}: transcript {texts[0]!r} != {texts[1]!r}")
    return {
        "max_abs_diff": worst,
        "same_transcripts": same_text,
        "utterances": len(outputs),
        "required": required,
    }


def check_parity(
    model: AcousticModel,
    inventory: TokenInventory,
    files: dict,
    utterances: list[tuple[str, np.ndarray]],
    atol: float = PARITY_ATOL,
) -> dict:
    """Run every exported file on ``utterances`` and compare with PyTorch.

    Parameters
    ----------
    model : AcousticModel
        The exported model, eval mode.
    inventory : TokenInventory
    files : dict
        Any of ``onnx``, ``onnx_int8``, ``stream_onnx``, ``stream_onnx_int8``,
        ``torchscript`` -> path.
    utterances : list of (str, np.ndarray)
        From :func:`parity_utterances`.
    atol : float
        Largest allowed log-prob difference for the fp32 graphs.

    Returns
    -------
    dict
        Per engine: ``max_abs_diff``, ``same_transcripts``, ``utterances``, ``required``.

    Raises
    ------
    ParityError
        Listing every failing utterance of a required comparison.
    """
    model.eval()
    graph = WholeUtteranceGraph(model)
    reference = [graph_log_probs(graph, wav) for _, wav in utterances]
    trained = [torch_log_probs(model, wav) for _, wav in utterances]
    failures: list[str] = []
    report = {
        # the exported front-end (STFT) against the training one (FFT): information, and the
        # transcripts must agree
        "graph_vs_training_model": _compare(
            "graph_vs_training_model", list(zip([u for u, _ in utterances], reference)), trained,
            inventory, atol=float("inf"), required=True, failures=failures,
        )
    }
    runners = {
        "onnx": (OnnxRecognizer, True),
        "onnx_int8": (OnnxRecognizer, False),
        "stream_onnx": (OnnxStreamer, True),
        "stream_onnx_int8": (OnnxStreamer, False),
    }
    for key, (runner_class, required) in runners.items():
        if key in files:
            runner = runner_class(files[key], threads=1)
            outputs = [(utt_id, runner.log_probs(wav)) for utt_id, wav in utterances]
            report[key] = _compare(key, outputs, reference, inventory, atol, required, failures)
            if key == "stream_onnx" and "onnx" in files:  # streaming == whole, both in ONNX
                whole = OnnxRecognizer(files["onnx"], threads=1)
                wholes = [whole.log_probs(wav) for _, wav in utterances]
                report["stream_vs_whole_onnx"] = _compare(
                    "stream_vs_whole_onnx", outputs, wholes, inventory, atol, True, failures
                )
    if "torchscript" in files:
        from speechkd.export.torchscript import load_torchscript

        module, _ = load_torchscript(files["torchscript"])
        with torch.no_grad():
            outputs = []
            for utt_id, wav in utterances:
                log_probs, out_lens = module(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
                outputs.append((utt_id, log_probs[0, : int(out_lens[0])].numpy()))
        report["torchscript"] = _compare(
            "torchscript", outputs, reference, inventory, atol, True, failures
        )
    if failures:
        raise ParityError(
            f"export parity check failed ({len(failures)} problems, tolerance {atol:.0e}):\n  "
            + "\n  ".join(failures)
        )
    return report
