"""Ensemble strategies: combine per-teacher frame posteriors into one target.

Every strategy takes ``probs``, a ``(batch, teachers, time, dim)`` tensor of
per-teacher probability distributions over the same ``dim`` categories at
the same frame rate (already tempered, mapped to the student inventory and
pooled, see :mod:`speechkd.distill.losses`), and returns the combined
``(batch, time, dim)`` distribution, which sums to one over ``dim``.

Choose one by name with :func:`combine` (the ``strategy`` key of a YAML).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

_TINY = 1e-30


def average(probs: torch.Tensor) -> torch.Tensor:
    """Arithmetic mean: ``q_t = (1/N) sum_i p_{i,t}``."""
    return probs.mean(1)


def geometric(probs: torch.Tensor) -> torch.Tensor:
    """Normalized log-linear (geometric) mean.

    ``q_t(v) = exp((1/N) sum_i log p_{i,t}(v)) / sum_u exp((1/N) sum_i log p_{i,t}(u))``.
    A category to which any teacher gives zero probability gets zero.
    """
    tiny = max(_TINY, torch.finfo(probs.dtype).tiny)
    log_mean = probs.clamp_min(tiny).log().mean(1)
    combined = torch.softmax(log_mean, dim=-1)
    any_zero = (probs <= 0).any(1)
    if bool(any_zero.any()):
        combined = torch.where(any_zero, torch.zeros((), dtype=combined.dtype), combined)
        combined = combined / combined.sum(-1, keepdim=True).clamp_min(tiny)
    return combined


def weighted(probs: torch.Tensor, weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Weighted arithmetic mean: ``q_t = sum_i w_i p_{i,t} / sum_i w_i``.

    Parameters
    ----------
    weights : torch.Tensor or sequence of float
        ``(teachers,)`` static weights, or ``(batch, teachers)`` per utterance;
        non-negative, normalized here. :func:`weights_from_dev_wer` derives
        them from the teachers' dev WER.
    """
    w = torch.as_tensor(weights, dtype=probs.dtype, device=probs.device)
    if w.dim() == 1:
        w = w[None, :].expand(probs.shape[0], -1)
    if w.shape != probs.shape[:2]:
        raise ValueError(f"weights shape {tuple(w.shape)} does not match {probs.shape[1]} teachers")
    if bool((w < 0).any()) or bool((w.sum(1) <= 0).any()):
        raise ValueError(
            f"ensemble weights must be non-negative and not all zero, got {w.tolist()}"
        )
    w = w / w.sum(1, keepdim=True)
    return (probs * w[:, :, None, None]).sum(1)


def weights_from_dev_wer(dev_wer: Sequence[float], temperature: float = 10.0) -> torch.Tensor:
    """Teacher weights from dev WER: ``w_i = exp(-WER_i / T_w) / sum_j exp(-WER_j / T_w)``.

    Parameters
    ----------
    dev_wer : sequence of float
        ``(teachers,)`` dev-set WER in percent.
    temperature : float
        ``T_w`` in WER percentage points: a teacher 10 points worse than
        another gets ``exp(-1)`` times its weight at the default. Large values
        tend to the plain average, small ones to the single best teacher.
    """
    wer = torch.as_tensor(list(dev_wer), dtype=torch.float64)
    if temperature <= 0:
        raise ValueError(f"dev-WER weight temperature must be > 0, got {temperature}")
    return torch.softmax(-wer / temperature, dim=0)


def best(
    probs: torch.Tensor, errors: torch.Tensor, tie_break: torch.Tensor | None = None
) -> torch.Tensor:
    """Per utterance, the teacher with the lowest error against the transcript.

    ``q_{u,t} = p_{i*(u),t}`` with ``i*(u) = argmin_i err_{u,i}`` (Gao et al.,
    2020). Ties go to the lowest ``tie_break`` (e.g. CER when ``errors`` is
    WER), then to the first teacher.

    Parameters
    ----------
    errors : torch.Tensor
        ``(batch, teachers)`` per-utterance error of each teacher (e.g. WER).
    tie_break : torch.Tensor, optional
        ``(batch, teachers)`` secondary error.
    """
    errors = torch.as_tensor(errors, device=probs.device).to(torch.float64)
    if errors.shape != probs.shape[:2]:
        raise ValueError(
            f"errors shape {tuple(errors.shape)} does not match (batch, teachers) {tuple(probs.shape[:2])}"
        )
    if bool(torch.isnan(errors).any()):
        raise ValueError(
            "the 'best' strategy needs each teacher's error on every utterance, but some are missing "
            "(build the cache with transcripts so per-utterance teacher errors are stored)"
        )
    lowest = errors.min(1, keepdim=True).values
    candidates = errors == lowest
    if tie_break is not None:
        secondary = torch.as_tensor(tie_break, device=probs.device).to(torch.float64)
        inf = torch.full_like(secondary, float("inf"))
        secondary = torch.where(candidates & ~torch.isnan(secondary), secondary, inf)
        chosen = torch.where(
            torch.isinf(secondary).all(1), candidates.float().argmax(1), secondary.argmin(1)
        )
    else:
        chosen = candidates.float().argmax(1)
    return probs[torch.arange(probs.shape[0], device=probs.device), chosen]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last dimension: ``H = -sum_v p(v) log p(v)``."""
    return -torch.xlogy(probs, probs).sum(-1)


def confidence(probs: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    """Per-frame confidence weighting by teacher entropy.

    ``w_{i,t} = exp(-beta * H_{i,t}) / sum_j exp(-beta * H_{j,t})`` and
    ``q_t = sum_i w_{i,t} p_{i,t}``, where ``H_{i,t}`` is the entropy (nats)
    of teacher ``i``'s distribution at frame ``t`` (the distribution being
    combined, i.e. after temperature) and ``beta`` is ``sharpness``.
    """
    w = torch.softmax(-sharpness * entropy(probs), dim=1)
    return (probs * w[..., None]).sum(1)


STRATEGIES: dict[str, Callable[..., torch.Tensor]] = {
    "average": average,
    "geometric": geometric,
    "weighted": weighted,
    "best": best,
    "confidence": confidence,
}


def combine(strategy: str, probs: torch.Tensor, **options) -> torch.Tensor:
    """Combine ``(batch, teachers, time, dim)`` teacher probabilities with a named strategy.

    Parameters
    ----------
    strategy : str
        One of :data:`STRATEGIES`: ``average``, ``geometric``, ``weighted``
        (option ``weights``), ``best`` (options ``errors``, ``tie_break``),
        ``confidence`` (option ``sharpness``).
    **options
        Passed to the strategy function.

    Returns
    -------
    torch.Tensor
        ``(batch, time, dim)`` combined distribution.
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown ensemble strategy {strategy!r}; choose one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[strategy](probs, **options)
