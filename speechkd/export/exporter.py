"""``speechkd export``: every on-device file of one experiment folder, checked.

Writes into ``out``:

- ``model.onnx`` / ``model.int8.onnx``: whole-utterance graph, fp32 and int8;
- ``model.stream.onnx`` / ``model.stream.int8.onnx``: chunk + state graph
  (StreamingStudent only);
- ``model.ts``: TorchScript trace of the whole-utterance graph (skipped,
  with the reason logged and recorded, where tracing fails);
- ``tokens.txt``: the token inventory;
- ``export.json``: files, sizes, quantized operators and the parity report.

Everything is written to ``<out>.incomplete`` first and moved to ``out``
only when the parity check passes; on failure the files stay in
``<out>.incomplete`` for inspection and :class:`ParityError` is raised.
"""

from __future__ import annotations

import logging
import os
import shutil

import yaml

from speechkd.experiment import load_model, model_name, write_json
from speechkd.export.onnx import DEFAULT_INT8_OPS, export_streaming, export_whole, quantize_int8
from speechkd.export.parity import PARITY_ATOL, check_parity, parity_utterances
from speechkd.models.student import StreamingStudent

logger = logging.getLogger(__name__)

FILES = {
    "onnx": "model.onnx",
    "onnx_int8": "model.int8.onnx",
    "stream_onnx": "model.stream.onnx",
    "stream_onnx_int8": "model.stream.int8.onnx",
    "torchscript": "model.ts",
    "tokens": "tokens.txt",
}
REPORT_FILE = "export.json"


class _IgnoreTagsLoader(yaml.SafeLoader):
    """Reads a hyperpyyaml file as plain YAML (``!new:`` / ``!name:`` ... become None)."""


_IgnoreTagsLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def default_test_manifest(folder: str) -> tuple[str, str | None]:
    """The experiment's first test manifest and data folder, from its ``hyperparams.yaml``."""
    path = os.path.join(folder, "hyperparams.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} has no hyperparams.yaml; pass --manifest TEST.csv")
    with open(path) as fin:
        hparams = yaml.load(fin, Loader=_IgnoreTagsLoader) or {}
    tests = hparams.get("test_csvs") or []
    if not tests or not isinstance(tests[0], str) or not os.path.exists(tests[0]):
        raise FileNotFoundError(f"{path}: no existing test_csvs entry; pass --manifest TEST.csv")
    data_folder = hparams.get("data_folder")
    return tests[0], data_folder if isinstance(data_folder, str) else None


def export_experiment(
    folder: str,
    out: str,
    manifest: str | None = None,
    data_root: str | None = None,
    parity_count: int = 8,
    chunk_ms: int = 320,
    int8_ops=DEFAULT_INT8_OPS,
    torchscript: bool = True,
    atol: float = PARITY_ATOL,
) -> dict:
    """Export a trained experiment folder and check the result.

    Parameters
    ----------
    folder : str
        Experiment folder (``model.json``, ``tokens.txt``, ``save/CKPT+*``).
    out : str
        Output folder (replaced files: the ones listed in :data:`FILES`).
    manifest : str, optional
        Test manifest for the parity check (default: the experiment's
        ``test_csvs[0]``).
    data_root : str, optional
        ``$data_root`` of the manifest.
    parity_count : int
        Utterances in the parity check.
    chunk_ms : int
        Streaming chunk (StreamingStudent only).
    int8_ops : sequence of str
        Operator types to quantize (see :mod:`speechkd.export.onnx`).
    torchscript : bool
        Also write ``model.ts``.
    atol : float
        Parity tolerance on log-probabilities.

    Returns
    -------
    dict
        The content of ``export.json``.

    Raises
    ------
    ParityError
        When an exported fp32 graph disagrees with PyTorch.
    """
    if manifest is None:
        manifest, hparams_root = default_test_manifest(folder)
        data_root = data_root or hparams_root
    utterances = parity_utterances(manifest, data_root, parity_count)
    model, inventory = load_model(folder)
    model.requires_grad_(False)
    name = model_name(folder)
    work = os.path.normpath(out) + ".incomplete"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    paths = {key: os.path.join(work, file) for key, file in FILES.items()}
    inventory.save(paths["tokens"])
    written = {"tokens": paths["tokens"]}

    metadata = export_whole(model, inventory, paths["onnx"], name)
    written["onnx"] = paths["onnx"]
    report = {
        "model": name,
        "experiment": os.path.abspath(folder),
        "metadata": _summary(metadata),
        "int8": {},
        "torchscript": None,
    }
    report["int8"]["whole"] = quantize_int8(paths["onnx"], paths["onnx_int8"], int8_ops)
    written["onnx_int8"] = paths["onnx_int8"]
    if isinstance(model, StreamingStudent):
        export_streaming(model, inventory, paths["stream_onnx"], name, chunk_ms)
        report["int8"]["streaming"] = quantize_int8(
            paths["stream_onnx"], paths["stream_onnx_int8"], int8_ops
        )
        written.update(stream_onnx=paths["stream_onnx"], stream_onnx_int8=paths["stream_onnx_int8"])
    if torchscript:
        report["torchscript"] = _try_torchscript(model, paths["torchscript"], metadata)
        if report["torchscript"]["written"]:
            written["torchscript"] = paths["torchscript"]

    report["parity_manifest"] = os.path.abspath(manifest)
    try:
        report["parity"] = check_parity(model, inventory, written, utterances, atol)
    finally:
        report["sizes_bytes"] = {key: os.path.getsize(path) for key, path in written.items()}
        write_json(os.path.join(work, REPORT_FILE), report)
    _publish(work, out)
    report["files"] = {
        key: os.path.join(out, os.path.basename(path)) for key, path in written.items()
    }
    write_json(os.path.join(out, REPORT_FILE), report)
    return report


def _summary(metadata: dict) -> dict:
    """Metadata without the token list (it is in tokens.txt)."""
    return {key: value for key, value in metadata.items() if key != "tokens"}


def _try_torchscript(model, path: str, metadata: dict) -> dict:
    """Trace to TorchScript; a failure is logged and recorded, not raised."""
    from speechkd.export.torchscript import export_torchscript

    try:
        export_torchscript(model, path, metadata)
    except Exception as err:  # noqa: BLE001 (tracing fails with many error types; recorded)
        logger.warning(
            "TorchScript export of %s failed, no model.ts written: %s",
            type(model).__name__,
            str(err).splitlines()[0],
        )
        if os.path.exists(path):
            os.remove(path)
        return {"written": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    logger.info("TorchScript export of %s: %s", type(model).__name__, path)
    return {"written": True, "method": "torch.jit.trace"}


def _publish(work: str, out: str) -> None:
    """Move the checked files from ``work`` into ``out`` (replacing older exports)."""
    os.makedirs(out, exist_ok=True)
    for file in list(FILES.values()) + [REPORT_FILE]:
        target = os.path.join(out, file)
        if os.path.exists(target):
            os.remove(target)
        if os.path.exists(os.path.join(work, file)):
            os.replace(os.path.join(work, file), target)
    shutil.rmtree(work)
