"""On-device export: ONNX fp32/int8 graphs that take raw audio, TorchScript, parity, runtime.

- :func:`export_experiment` (``speechkd export``): every file of a trained
  experiment folder, parity-checked (:mod:`speechkd.export.exporter`);
- :mod:`speechkd.export.onnx`: graph export, metadata, int8 quantization;
- :mod:`speechkd.export.runtime` (``speechkd-run``): numpy + soundfile +
  onnxruntime only; importing it (or this package) does not import torch.

The torch-side names are imported lazily so that ``import
speechkd.export.runtime`` stays torch-free.
"""

import importlib

_LAZY = {
    "export_experiment": "speechkd.export.exporter",
    "export_whole": "speechkd.export.onnx",
    "export_streaming": "speechkd.export.onnx",
    "quantize_int8": "speechkd.export.onnx",
    "read_metadata": "speechkd.export.onnx",
    "export_torchscript": "speechkd.export.torchscript",
    "load_torchscript": "speechkd.export.torchscript",
    "check_parity": "speechkd.export.parity",
    "ParityError": "speechkd.export.parity",
    "OnnxRecognizer": "speechkd.export.runtime",
    "OnnxStreamer": "speechkd.export.runtime",
    "read_audio": "speechkd.export.runtime",
    "AudioInputError": "speechkd.export.runtime",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'speechkd.export' has no attribute {name!r}")
