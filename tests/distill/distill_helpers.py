"""Shared helpers for the distillation tests (imported as a plain module)."""

import torch

SYMBOLS = ["<blank>", " ", "a", "b", "c", "d", "e", "f", "g", "h", "i", "k"]


def random_log_probs(
    generator: torch.Generator, *shape: int, scale: float = 3.0, dtype=torch.float64
) -> torch.Tensor:
    return torch.log_softmax(torch.randn(*shape, generator=generator, dtype=dtype) * scale, -1)


def meta_for(symbols, shifts=(10,), k=0, names=None, features=None):
    from speechkd.distill.cache import make_meta

    names = names or [f"t{i}" for i in range(len(shifts))]
    teachers = [
        {"name": n, "class": "Fake", "fingerprint": f"fp-{n}", "frame_shift_ms": s}
        for n, s in zip(names, shifts)
    ]
    return make_meta(teachers, symbols, features or {"sample_rate": 16000}, k=k)


def fp16_round(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(x.dtype)


def teachers_like(symbols, shifts=(20,), k=0, names=None, dev_wer=None):
    """Stand-in for a PosteriorCache or TeacherEnsemble: exactly what a TeacherTarget reads.

    ``symbols`` is one list per teacher, or a single list shared by all.
    """
    from types import SimpleNamespace

    symbols = list(symbols)
    if symbols and isinstance(symbols[0], str):
        symbols = [symbols] * len(shifts)
    return SimpleNamespace(
        teacher_names=list(names or [f"teacher{i}" for i in range(len(shifts))]),
        symbols=[list(s) for s in symbols],
        frame_shifts_ms=list(shifts),
        k=k,
        dev_wer_list=lambda: None if dev_wer is None else list(dev_wer),
    )
