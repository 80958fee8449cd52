"""Distillation core: teachers, posterior cache, the teacher target, ensembles, objective terms."""

from speechkd.distill.cache import (
    PosteriorCache,
    PosteriorCacheWriter,
    fingerprint_module,
    make_meta,
)
from speechkd.distill.ensemble import STRATEGIES, combine
from speechkd.distill.losses import teacher_batch_from_log_probs
from speechkd.distill.objectives import (
    CTCTerm,
    Objective,
    ObjectiveBatch,
    ObjectiveTerm,
    PosteriorKL,
)
from speechkd.distill.target import TeacherTarget
from speechkd.distill.teachers import SpeechkdTeacher, Teacher, TeacherEnsemble

__all__ = [
    "STRATEGIES",
    "CTCTerm",
    "Objective",
    "ObjectiveBatch",
    "ObjectiveTerm",
    "PosteriorCache",
    "PosteriorCacheWriter",
    "PosteriorKL",
    "SpeechkdTeacher",
    "Teacher",
    "TeacherEnsemble",
    "TeacherTarget",
    "combine",
    "fingerprint_module",
    "make_meta",
    "teacher_batch_from_log_probs",
]
