"""TorchScript export of the whole-utterance graph (``torch.jit.trace``).

The traced module has the same contract as the ONNX whole-utterance graph:
``(wavs (batch, samples) float32, wav_lens (batch,) int64) -> (log_probs
(batch, frames, vocab), out_lens (batch,))``. The export metadata travels in
the archive as ``extra/metadata.json``::

    files = {"metadata.json": ""}
    module = torch.jit.load("model.ts", _extra_files=files)
    tokens = json.loads(files["metadata.json"])["tokens"]

Tracing, not scripting: SpeechBrain's Conformer is not scriptable, but it
traces once its parameters do not require grad (an in-place ``masked_fill_``
on a view would otherwise fail when the trace runs); the parity check runs
every traced module on utterances of other lengths than the example it was
traced with.
"""

from __future__ import annotations

import json
import warnings

import torch

from speechkd.export.graphs import WholeUtteranceGraph
from speechkd.models.base import AcousticModel

METADATA_FILE = "metadata.json"


def export_torchscript(model: AcousticModel, path: str, metadata: dict) -> torch.jit.ScriptModule:
    """Trace ``model``'s whole-utterance graph and save it to ``path``.

    Parameters
    ----------
    model : AcousticModel
        Trained model; its parameters are frozen (``requires_grad=False``).
    path : str
        Output file (``.ts``).
    metadata : dict
        Stored as ``metadata.json`` inside the archive.

    Returns
    -------
    torch.jit.ScriptModule
        The traced module.
    """
    model.eval().requires_grad_(False)
    graph = WholeUtteranceGraph(model)
    example = (0.01 * torch.randn(1, model.sample_rate), torch.tensor([model.sample_rate]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter(
            "ignore"
        )  # TracerWarnings: shape branches, checked by the parity test
        traced = torch.jit.trace(graph, example, check_trace=False)
        torch.jit.save(traced, path, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return traced


def load_torchscript(path: str) -> tuple[torch.jit.ScriptModule, dict]:
    """Load a file written by :func:`export_torchscript`: (module, metadata)."""
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.11 deprecates torch.jit.*
        module = torch.jit.load(path, map_location="cpu", _extra_files=files)
    return module, json.loads(files[METADATA_FILE])
