"""Pretrained CTC models as teachers, each loaded from a local folder (nothing is downloaded).

In a YAML a teacher is a ``!new:`` object of one of these classes, or plain
data that :func:`load_teacher` reads (so it also passes on a command line and
through ``speechkd run``): a folder, or ``{folder: ..., kind: ..., <options>}``::

    teachers:
        - results/ctc/conformer/1234                      # a speechkd experiment folder
        - /models/wav2vec2-xls-r-300m-fr                  # kind found from the files
        - {folder: /models/mms-1b-all, target_lang: deu}  # with the adapter's options

One adapter per toolkit, each a :class:`~speechkd.distill.teachers.Teacher`
that folds its model's vocabulary to characters
(:class:`~speechkd.distill.pretrained.base.VocabularyFold`) and hashes its
weights into the cache fingerprint. The modules import their toolkit
(transformers, onnxruntime, ...) only when a teacher is built; NeMo's
(:class:`~speechkd.distill.pretrained.nemo.NemoCTCTeacher`, optional extra
``nemo``) is not imported here at all.
"""

from speechkd.distill.pretrained.base import PretrainedCTCTeacher, VocabularyFold
from speechkd.distill.pretrained.huggingface import HuggingFaceCTCTeacher
from speechkd.distill.pretrained.onnx_ctc import OnnxCTCTeacher
from speechkd.distill.pretrained.speechbrain_models import SpeechBrainCTCTeacher
from speechkd.distill.pretrained.torchaudio_models import (
    TorchaudioCTCTeacher,
    save_torchaudio_teacher,
)

KINDS = {
    "huggingface": HuggingFaceCTCTeacher,
    "torchaudio": TorchaudioCTCTeacher,
    "onnx": OnnxCTCTeacher,
    "speechbrain": SpeechBrainCTCTeacher,
}


def detect_kind(folder: str) -> str:
    """The adapter a model folder (or ``.nemo`` file) needs, from the files in it.

    ``vocab.json`` + ``config.json``: huggingface; ``model.pt`` + ``config.json``:
    torchaudio; ``tokens.txt`` + ``*.onnx``: onnx; ``hyperparams.yaml``: speechbrain.
    """
    import os

    if os.path.isfile(folder) and folder.endswith(".nemo"):
        return "nemo"
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"teacher folder {folder} does not exist")
    files = set(os.listdir(folder))
    if {"vocab.json", "config.json"} <= files:
        return "huggingface"
    if {"model.pt", "config.json"} <= files:
        return "torchaudio"
    if "tokens.txt" in files and any(f.endswith(".onnx") for f in files):
        return "onnx"
    if "hyperparams.yaml" in files:
        return "speechbrain"
    if any(f.endswith(".nemo") for f in files):
        raise ValueError(f"{folder} holds a .nemo file: give the file itself as the teacher")
    raise ValueError(f"{folder} is no model folder speechkd knows: expected a speechkd experiment (model.json), "
                     "HuggingFace (config.json + vocab.json), torchaudio (config.json + model.pt), ONNX "
                     "(tokens.txt + *.onnx) or SpeechBrain (hyperparams.yaml) folder")


def load_teacher(folder: str, kind: str | None = None, device: str = "cpu", **options):
    """A pretrained teacher from its folder: ``kind`` (one of :data:`KINDS`) or found by :func:`detect_kind`."""
    kind = kind or detect_kind(folder)
    if kind == "nemo":  # an optional extra: imported only when asked for
        from speechkd.distill.pretrained.nemo import NemoCTCTeacher

        return NemoCTCTeacher(folder, device=device, **options)
    if kind not in KINDS:
        raise ValueError(f"unknown teacher kind {kind!r}; choose one of {sorted([*KINDS, 'nemo'])}")
    return KINDS[kind](folder, device=device, **options)


__all__ = [
    "KINDS",
    "HuggingFaceCTCTeacher",
    "OnnxCTCTeacher",
    "PretrainedCTCTeacher",
    "SpeechBrainCTCTeacher",
    "TorchaudioCTCTeacher",
    "VocabularyFold",
    "detect_kind",
    "load_teacher",
    "save_torchaudio_teacher",
]
