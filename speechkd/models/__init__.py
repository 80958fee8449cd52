"""Teacher and student acoustic models with CTC heads and declared frame shifts.

All models take raw 16 kHz waveforms and relative lengths (SpeechBrain
convention); see :class:`~speechkd.models.base.AcousticModel`.
"""

from speechkd.models.augment import spec_augment
from speechkd.models.base import AcousticModel, count_parameters
from speechkd.models.conformer import ConformerCTC
from speechkd.models.crdnn import CRDNNCTC
from speechkd.models.features import GlobalNormalizer, LogMelFilterbank
from speechkd.models.student import StreamingStudent
from speechkd.models.tdnn import TDNNCTC

ARCHITECTURES = {
    "conformer": ConformerCTC,
    "crdnn": CRDNNCTC,
    "tdnn": TDNNCTC,
    "student": StreamingStudent,
}

__all__ = [
    "ARCHITECTURES",
    "CRDNNCTC",
    "TDNNCTC",
    "AcousticModel",
    "ConformerCTC",
    "GlobalNormalizer",
    "LogMelFilterbank",
    "StreamingStudent",
    "count_parameters",
    "spec_augment",
]
