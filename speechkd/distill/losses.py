r"""The numerical pieces of frame-level KD (DESIGN.md, "The KD loss, precisely").

This module holds the functions the teacher target and the objective are
built from; it has no loss object of its own:

- the teacher side: :func:`reconstruct_dense` (dense distribution from a
  top-k cache), :func:`temper`, :func:`delay_frames`, and
  :func:`teacher_batch_from_log_probs` (online teachers -> the tensors a
  cache gives). :class:`speechkd.distill.target.TeacherTarget` chains them
  (with inventory mapping, frame pooling and the ensemble strategy) into the
  combined target q_t^τ; its module doc says how, step by step.
- the KL: :func:`topk_kl`, used by
  :class:`speechkd.distill.objectives.PosteriorKL`. The whole objective
  ``α · CTC + (1 − α) · τ² · mean_t KL`` is an
  :class:`speechkd.distill.objectives.Objective` of a ``CTCTerm`` and a
  ``PosteriorKL``.

The KL over top-k plus a rest bucket
------------------------------------
The combined target is truncated again: its k most probable student tokens
(k from the cache; all V_s when the cache is full) are kept and every other
student token plus the out-of-inventory column forms one "rest" bucket. The
student's tempered distribution softmax(z_t/τ) is collapsed onto the same k
tokens plus a rest bucket (log-sum-exp of the other tokens), and the KL runs
over those k + 1 categories. For one teacher with k = V (same inventory,
same frame rate) every step is the identity and the KL is exactly the full
KL. (If OOV mass exists in "rest" mode and k >= V_s, the target lowers k to
V_s - 1 so the student has a rest bucket to match it.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechkd.distill.cache import LOG_PROB_FLOOR, stored_width, topk_fp16
from speechkd.models.features import relative_lengths_to_absolute


# --------------------------------------------------------------------------- teacher side
def reconstruct_dense(
    values: torch.Tensor,
    ids: torch.Tensor,
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    rest_log_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense distribution from top-k log-probs, rest mass spread uniformly.

    Parameters
    ----------
    values : torch.Tensor
        ``(..., width)`` cached log-probabilities. Columns holding
        :data:`~speechkd.distill.cache.LOG_PROB_FLOOR` (padding) add no mass.
    ids : torch.Tensor
        ``(..., width)`` token ids in ``[0, vocab_size)``.
    vocab_size : int
        The teacher's V.
    dtype : torch.dtype
    rest_log_probs : torch.Tensor, optional
        ``(...)`` log of the mass outside the cached columns as the cache
        stores it (computed before fp16 rounding, :func:`~speechkd.distill.cache.topk_fp16`);
        values at :data:`~speechkd.distill.cache.LOG_PROB_FLOOR` mean none.
        Without it (hand-made teacher batches) the rest mass is
        ``max(0, 1 - Σ exp(values))``, which fp16 rounding can wipe out on
        confident frames.

    Returns
    -------
    torch.Tensor
        ``(..., vocab_size)`` probabilities summing to one: cached tokens keep
        ``exp(value)``, the ``V - k`` other tokens share the rest mass
        equally (``k`` = number of distinct cached tokens in the frame).
    """
    probs = values.to(dtype).exp()
    probs = torch.where(
        values <= LOG_PROB_FLOOR, torch.zeros((), dtype=dtype, device=probs.device), probs
    )
    ids = ids.long()
    shape = (*values.shape[:-1], vocab_size)
    dense = torch.zeros(shape, dtype=dtype, device=values.device).scatter_add_(-1, ids, probs)
    real = (values > LOG_PROB_FLOOR).to(dtype)
    cached = torch.zeros(shape, dtype=dtype, device=values.device).scatter_add_(-1, ids, real) > 0
    n_other = (~cached).sum(-1, keepdim=True)
    if rest_log_probs is None:
        rest = (1.0 - dense.sum(-1, keepdim=True)).clamp_min(0.0)
    else:
        rest_log_probs = rest_log_probs.to(dtype)[..., None]
        rest = torch.where(rest_log_probs <= LOG_PROB_FLOOR, 0.0, rest_log_probs.exp())
    spread = torch.where(n_other > 0, rest / n_other.clamp_min(1).to(dtype), torch.zeros_like(rest))
    dense = torch.where(cached, dense, spread.expand_as(dense))
    return dense / dense.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


def delay_frames(target: torch.Tensor, delay: int, blank_index: int = 0) -> torch.Tensor:
    """Shift distributions ``delay`` frames later along time; the first frames become blank.

    Parameters
    ----------
    target : torch.Tensor
        ``(batch, time, classes)`` per-frame distributions.
    delay : int
        Frames to shift by (0 returns ``target`` unchanged).
    blank_index : int
        Class that the ``delay`` new leading frames put all their mass on.

    Returns
    -------
    torch.Tensor
        ``(batch, time, classes)``: out[:, t] = target[:, t - delay] for t >= delay.
    """
    if delay <= 0:
        return target
    lead = torch.zeros_like(target[:, :1]).expand(-1, delay, -1).clone()
    lead[..., blank_index] = 1.0
    return torch.cat([lead, target], dim=1)[:, : target.shape[1]]


def delay_states(states: torch.Tensor, delay: int) -> torch.Tensor:
    """Shift layer states ``delay`` frames later along time, as :func:`delay_frames` does targets.

    Parameters
    ----------
    states : torch.Tensor
        ``(batch, time, dim)`` per-frame states (e.g. a teacher layer at the student's rate).
    delay : int
        Frames to shift by (0 returns ``states`` unchanged).

    Returns
    -------
    torch.Tensor
        ``(batch, time, dim)``: out[:, t] = states[:, t - delay] for t >= delay, and the
        first frame's state (leading silence) before.
    """
    if delay <= 0:
        return states
    lead = states[:, :1].expand(-1, delay, -1)
    return torch.cat([lead, states], dim=1)[:, : states.shape[1]]


def temper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^{1/τ} / Σ p^{1/τ}`` over the last dimension (zeros stay zero)."""
    if temperature == 1.0:
        return probs
    logp = torch.where(probs > 0, probs.log(), torch.full_like(probs, float("-inf")))
    return torch.softmax(logp / temperature, dim=-1)


def teacher_batch_from_log_probs(
    per_teacher_log_probs: Sequence[torch.Tensor],
    per_teacher_lens: Sequence[torch.Tensor],
    k: int,
) -> dict:
    """Online teachers -> the same tensors :meth:`PosteriorCache.collate` returns.

    Applies the cache's top-k selection and fp16 rounding
    (:func:`~speechkd.distill.cache.topk_fp16`) so that training from online
    teachers computes the same loss as training from their cache.

    Parameters
    ----------
    per_teacher_log_probs : sequence of torch.Tensor
        One ``(batch, time_i, V_i)`` log-probability tensor per teacher.
    per_teacher_lens : sequence of torch.Tensor
        One ``(batch,)`` relative length tensor per teacher (SpeechBrain style),
        or absolute frame counts if of integer dtype.
    k : int
        Cache k (0 = full distribution).

    Returns
    -------
    dict
        ``log_probs`` ``(batch, teachers, time, width)`` float32, ``ids`` long,
        ``frames`` ``(batch, teachers)`` long, ``rest_log_probs``
        ``(batch, teachers, time)`` float32.
    """
    device = per_teacher_log_probs[0].device
    batch = per_teacher_log_probs[0].shape[0]
    n_teachers = len(per_teacher_log_probs)
    frames = torch.stack([
        relative_lengths_to_absolute(torch.as_tensor(lens, device=device), lp.shape[1])
        for lp, lens in zip(per_teacher_log_probs, per_teacher_lens)
    ], 1)
    time = max(lp.shape[1] for lp in per_teacher_log_probs)
    width = max(stored_width(k, lp.shape[-1]) for lp in per_teacher_log_probs)
    values = torch.full((batch, n_teachers, time, width), LOG_PROB_FLOOR, device=device)
    values[..., 0] = 0.0
    ids = torch.zeros((batch, n_teachers, time, width), dtype=torch.long, device=device)
    rest = torch.full((batch, n_teachers, time), LOG_PROB_FLOOR, device=device)
    for i, lp in enumerate(per_teacher_log_probs):
        v, t, r = topk_fp16(lp, k)
        valid = (torch.arange(lp.shape[1], device=device)[None, :] < frames[:, i, None])[..., None]
        w = v.shape[-1]
        values[:, i, : lp.shape[1], :w] = torch.where(
            valid, v.float(), values[:, i, : lp.shape[1], :w]
        )
        values[:, i, : lp.shape[1], w:] = torch.where(
            valid, LOG_PROB_FLOOR, values[:, i, : lp.shape[1], w:]
        )
        ids[:, i, : lp.shape[1], :w] = torch.where(
            valid, t.long(), torch.zeros_like(t, dtype=torch.long)
        )
        rest[:, i, : lp.shape[1]] = torch.where(valid[..., 0], r, LOG_PROB_FLOOR)
    return {"log_probs": values, "ids": ids, "frames": frames, "rest_log_probs": rest}


# --------------------------------------------------------------------------- KL
def topk_kl(target: torch.Tensor, student_log_probs: torch.Tensor, k: int) -> torch.Tensor:
    """KL(target ‖ student) over the target's top-k student tokens plus a rest bucket.

    Parameters
    ----------
    target : torch.Tensor
        ``(batch, time, V_s + 1)`` target distribution; the last column is
        out-of-inventory mass, which always belongs to the rest bucket.
    student_log_probs : torch.Tensor
        ``(batch, time, V_s)`` student log-probabilities (already tempered).
    k : int
        Tokens kept, ``1 <= k <= V_s``; with ``k == V_s`` there is no student
        rest bucket (the target's OOV column must then be zero).

    Returns
    -------
    torch.Tensor
        ``(batch, time)`` KL in nats. A category the target gives no mass
        adds nothing, even where the student's log-probability is ``-inf``
        (``0 · log 0 = 0``, not NaN).
    """
    vocab = student_log_probs.shape[-1]
    sel_q, sel_ids = torch.topk(target[..., :vocab], k, dim=-1)
    sel_s = torch.gather(student_log_probs, -1, sel_ids)
    kl = (torch.xlogy(sel_q, sel_q) - cross_term(sel_q, sel_s)).sum(-1)
    if k < vocab:
        selected = torch.zeros_like(student_log_probs, dtype=torch.bool).scatter_(-1, sel_ids, True)
        rest_q = target[..., :vocab].masked_fill(selected, 0.0).sum(-1) + target[..., vocab]
        rest_s = torch.logsumexp(student_log_probs.masked_fill(selected, float("-inf")), dim=-1)
        kl = kl + torch.xlogy(rest_q, rest_q) - cross_term(rest_q, rest_s)
    return kl


def cross_term(q: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """``q · log s`` with ``0 · (-inf) = 0`` (and no NaN gradient through the unused branch)."""
    used = q > 0
    return torch.where(used, q * torch.where(used, log_s, torch.zeros_like(log_s)), torch.zeros_like(q))
