"""Pretrained CTC models as teachers, each loaded from a local folder (nothing is downloaded).

One adapter per toolkit, each a :class:`~speechkd.distill.teachers.Teacher`
that folds its model's vocabulary to characters
(:class:`~speechkd.distill.pretrained.base.VocabularyFold`) and hashes its
weights into the cache fingerprint. The modules import their toolkit
(transformers, onnxruntime, ...) only when a teacher is built.
"""

from speechkd.distill.pretrained.base import PretrainedCTCTeacher, VocabularyFold
from speechkd.distill.pretrained.huggingface import HuggingFaceCTCTeacher
from speechkd.distill.pretrained.onnx_ctc import OnnxCTCTeacher
from speechkd.distill.pretrained.speechbrain_models import SpeechBrainCTCTeacher
from speechkd.distill.pretrained.torchaudio_models import TorchaudioCTCTeacher, save_torchaudio_teacher

__all__ = [
    "HuggingFaceCTCTeacher",
    "OnnxCTCTeacher",
    "PretrainedCTCTeacher",
    "SpeechBrainCTCTeacher",
    "TorchaudioCTCTeacher",
    "VocabularyFold",
    "save_torchaudio_teacher",
]
