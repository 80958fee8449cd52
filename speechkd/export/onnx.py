"""ONNX export (opset 17, legacy TorchScript-based exporter) and int8 dynamic quantization.

Files and graphs (see :mod:`speechkd.export.graphs`):

- whole-utterance graph: inputs ``wavs`` (batch, samples) float32 and
  ``wav_lens`` (batch,) int64; outputs ``log_probs`` (batch, frames, vocab)
  and ``out_lens`` (batch,) int64;
- streaming graph (StreamingStudent only): inputs ``chunk`` (batch,
  chunk_samples), ``audio_context``, ``conv_buffer_<i>``..., ``gru_hidden``;
  outputs ``log_probs`` and ``next_<state>`` for each state input.

Every value of the ONNX metadata (``metadata_props``) is JSON-encoded:
``speechkd_graph`` ("whole" or "streaming"), ``model_name``,
``model_class``, ``tokens`` (list, index = token id, blank first, the space
as " "), ``tokens_fingerprint``, ``sample_rate``, ``hop_length``,
``frame_shift_ms``, ``subsampling``, ``precision`` ("fp32" / "int8"), and
for streaming graphs ``chunk_samples``, ``chunk_ms``, ``context_samples``,
``state_inputs``, ``state_outputs``.

Int8 quantization
-----------------
:func:`quantize_int8` uses ``onnxruntime.quantization.quantize_dynamic``:
weights are stored as int8, activations are quantized per call at run
time. By default it quantizes ``MatMul`` (every ``nn.Linear``: the
Conformer's attention and feed-forward layers, projections, the CTC
layer) and ``LSTM`` (the CRDNN's BiLSTM, as ``DynamicQuantizeLSTM``).
It does not quantize:

- ``Conv``: the model's convolutions stay fp32 because onnxruntime's
  ``ConvInteger`` kernel is slower than its fp32 convolution on x86 CPUs.
  Measured on the 1-epoch tiny-corpus TDNN teacher (30 utterances, 1
  thread, AMD EPYC): MatMul-only int8 RTF 0.0045, file 5003 KiB; MatMul +
  Conv int8 RTF 0.0082 (1.9x slower), file 1376 KiB, and twice the largest
  log-prob deviation from fp32 (0.24 vs 0.12). Pass
  ``op_types=("MatMul", "LSTM", "Conv")`` (``--int8-ops``) when file size
  matters more than speed. The log-mel front-end (STFT + mel MatMul) is
  always excluded: quantizing its input would turn the waveform into
  8-bit audio.
- ``Gemm``: onnxruntime's dynamic quantizer has no Gemm kernel (the
  legacy exporter writes ``nn.Linear`` on 3-D inputs as MatMul + Add, so
  this loses nothing here).
- ``GRU``: onnxruntime has no dynamically quantized GRU, so the streaming
  student's recurrent weights stay fp32; its int8 file shrinks less than
  the other architectures'.
"""

from __future__ import annotations

import json
import logging
import warnings

import onnx
import torch

from speechkd.export.graphs import (
    CHUNK_INPUT,
    LENGTHS_INPUT,
    LOG_PROBS_OUTPUT,
    OUT_LENGTHS_OUTPUT,
    WAV_INPUT,
    StreamingChunkGraph,
    WholeUtteranceGraph,
    new_state_name,
)
from speechkd.models.base import AcousticModel
from speechkd.text import TokenInventory

logger = logging.getLogger(__name__)

OPSET = 17
DEFAULT_INT8_OPS = ("MatMul", "LSTM")
"""Operator types :func:`quantize_int8` quantizes unless told otherwise."""
FRONTEND_SCOPE = "/stft_logmel/"
"""Node-name prefix of the feature front-end in the exported graphs (never quantized)."""


def base_metadata(model: AcousticModel, inventory: TokenInventory, name: str) -> dict:
    """Metadata shared by every graph of ``model``."""
    return {
        "model_name": name,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "tokens": list(inventory.symbols),
        "tokens_fingerprint": inventory.fingerprint,
        "sample_rate": model.sample_rate,
        "hop_length": model.features.hop_length,
        "frame_shift_ms": model.frame_shift_ms,
        "subsampling": model.subsampling,
    }


def write_metadata(path: str, metadata: dict, drop_value_info: bool = False) -> None:
    """Replace ``path``'s ONNX metadata by ``metadata`` (values JSON-encoded).

    ``drop_value_info`` also removes the optional intermediate shape
    annotations (the quantizer adds hundreds; onnxruntime infers them again).
    """
    proto = onnx.load(path)
    if drop_value_info:
        del proto.graph.value_info[:]
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, path)


def read_metadata(path: str) -> dict:
    """ONNX metadata of ``path``, values decoded from JSON."""
    proto = onnx.load(path, load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}


def _export(module: torch.nn.Module, args: tuple, path: str, **kwargs) -> None:
    """Legacy-exporter call with its TracerWarnings silenced (the shape branches they flag
    are checked by the parity tests instead)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            **kwargs,
        )


def export_whole(model: AcousticModel, inventory: TokenInventory, path: str, name: str) -> dict:
    """Write the whole-utterance fp32 graph of ``model`` to ``path``.

    Parameters
    ----------
    model : AcousticModel
        Trained model (put in eval mode here).
    inventory : TokenInventory
        The model's tokens (stored in the metadata).
    path : str
        Output ``.onnx`` file.
    name : str
        Model name for the metadata.

    Returns
    -------
    dict
        The metadata written.
    """
    graph = WholeUtteranceGraph(model.eval())
    example = (torch.zeros(1, model.sample_rate), torch.tensor([model.sample_rate]))
    _export(
        graph,
        example,
        path,
        input_names=[WAV_INPUT, LENGTHS_INPUT],
        output_names=[LOG_PROBS_OUTPUT, OUT_LENGTHS_OUTPUT],
        dynamic_axes={
            WAV_INPUT: {0: "batch", 1: "samples"},
            LENGTHS_INPUT: {0: "batch"},
            LOG_PROBS_OUTPUT: {0: "batch", 1: "frames"},
            OUT_LENGTHS_OUTPUT: {0: "batch"},
        },
    )
    metadata = {
        **base_metadata(model, inventory, name),
        "speechkd_graph": "whole",
        "precision": "fp32",
    }
    write_metadata(path, metadata)
    return metadata


def chunk_frames_for(model: AcousticModel, chunk_ms: int) -> int:
    """Feature frames of a ``chunk_ms`` chunk, checked to be a multiple of the output frame shift."""
    if chunk_ms <= 0 or chunk_ms % model.frame_shift_ms:
        raise ValueError(
            f"chunk_ms must be a positive multiple of the model's frame shift "
            f"({model.frame_shift_ms} ms), got {chunk_ms}"
        )
    return chunk_ms * model.sample_rate // (1000 * model.features.hop_length)


def export_streaming(
    model, inventory: TokenInventory, path: str, name: str, chunk_ms: int = 320
) -> dict:
    """Write the streaming (chunk + state) fp32 graph of a StreamingStudent to ``path``.

    Parameters
    ----------
    model : speechkd.models.StreamingStudent
        Trained streaming student.
    inventory : TokenInventory
    path : str
        Output ``.onnx`` file.
    name : str
        Model name for the metadata.
    chunk_ms : int
        Audio per call, a multiple of the output frame shift.

    Returns
    -------
    dict
        The metadata written.
    """
    graph = StreamingChunkGraph(model.eval(), chunk_frames_for(model, chunk_ms))
    state = graph.initial_state(1)
    state_names = graph.state_names
    output_names = [LOG_PROBS_OUTPUT] + [new_state_name(n) for n in state_names]
    dynamic_axes = {CHUNK_INPUT: {0: "batch"}, LOG_PROBS_OUTPUT: {0: "batch"}}
    for state_name, tensor in zip(state_names, state):
        batch_dim = 1 if tensor.dim() == 3 and state_name == state_names[-1] else 0
        dynamic_axes[state_name] = {batch_dim: "batch"}
        dynamic_axes[new_state_name(state_name)] = {batch_dim: "batch"}
    _export(
        graph,
        (torch.zeros(1, graph.chunk_samples), *state),
        path,
        input_names=[CHUNK_INPUT] + state_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
    )
    metadata = {
        **base_metadata(model, inventory, name),
        "speechkd_graph": "streaming",
        "precision": "fp32",
        "chunk_samples": graph.chunk_samples,
        "chunk_ms": chunk_ms,
        "context_samples": graph.context_samples,
        "state_inputs": state_names,
        "state_outputs": output_names[1:],
    }
    write_metadata(path, metadata)
    return metadata


def quantize_int8(src: str, dst: str, op_types=DEFAULT_INT8_OPS, per_channel: bool = False) -> dict:
    """Dynamic int8 quantization of ``src`` into ``dst``, metadata kept.

    Parameters
    ----------
    src : str
        fp32 ``.onnx`` file written by this module.
    dst : str
        Output file.
    op_types : sequence of str
        Operator types to quantize (see the module docstring for why the
        default is ``("MatMul", "LSTM")``). The feature front-end is always
        left in fp32.
    per_channel : bool
        Per-output-channel weight scales.

    Returns
    -------
    dict
        ``{"quantized": {op_type: count}, "kept_fp32": {op_type: count}}`` over
        the weight-bearing ops (MatMul, Gemm, Conv, LSTM, GRU).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(src)
    frontend = [n.name for n in proto.graph.node if n.name.startswith(FRONTEND_SCOPE)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs advice on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=frontend,
            )
    finally:
        root.setLevel(level)
    metadata = read_metadata(src)
    metadata.update(precision="int8", int8_op_types=list(op_types))
    write_metadata(dst, metadata, drop_value_info=True)
    return quantization_summary(dst)


INTEGER_OPS = {
    "MatMulInteger": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "ConvInteger": "Conv",
    "DynamicQuantizeLSTM": "LSTM",
}
FLOAT_WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "LSTM", "GRU")


def quantization_summary(path: str) -> dict:
    """Count quantized and fp32 weight-bearing ops of an ONNX file (front-end included in fp32)."""
    quantized: dict[str, int] = {}
    kept: dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        if node.op_type in INTEGER_OPS:
            key = INTEGER_OPS[node.op_type]
            quantized[key] = quantized.get(key, 0) + 1
        elif node.op_type in FLOAT_WEIGHT_OPS:
            kept[node.op_type] = kept.get(node.op_type, 0) + 1
    return {"quantized": quantized, "kept_fp32": kept}
