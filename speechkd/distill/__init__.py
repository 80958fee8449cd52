"""Distillation core: posterior cache, inventory/frame alignment, ensembles, KD loss."""

from speechkd.distill.cache import (
    PosteriorCache,
    PosteriorCacheWriter,
    fingerprint_module,
    make_meta,
    teacher_entry,
)
from speechkd.distill.ensemble import STRATEGIES, combine
from speechkd.distill.losses import DistillationLoss, teacher_batch_from_log_probs

__all__ = [
    "STRATEGIES",
    "DistillationLoss",
    "PosteriorCache",
    "PosteriorCacheWriter",
    "combine",
    "fingerprint_module",
    "make_meta",
    "teacher_batch_from_log_probs",
    "teacher_entry",
]
