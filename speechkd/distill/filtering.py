"""Unlabelled-data agreement filter (Cui et al. 2017): keep audio the teachers agree on.

Untranscribed target-language audio is only as useful as the teachers'
posteriors on it. On an utterance where the adapted teachers disagree, the
ensemble target is a blur of guesses; the filter drops those utterances
before distillation. Two scores per utterance, from the teachers' (cached)
posteriors alone, never from a transcript:

- ``confidence``: the mean, over frames where the averaged ensemble's argmax
  is not blank (all frames if there is none), of the averaged ensemble's
  top probability. High when the teachers put their mass on the same token.
- ``teacher_cer``: the mean, over unordered teacher pairs, of the character
  error rate between their greedy transcripts, symmetrised as
  ``edit_distance(a, b) / max(len(a), len(b))`` (0 when both are empty), in
  percent. Low when the teachers transcribe the utterance alike.

``method="confidence"`` keeps ``confidence >= threshold``;
``method="teacher_cer"`` keeps ``teacher_cer <= threshold``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from speechkd.distill.agreement import greedy_collapse, ids_to_text
from speechkd.distill.target import TeacherTarget

logger = logging.getLogger(__name__)

METHODS = ("confidence", "teacher_cer")


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (characters or tokens)."""
    previous = list(range(len(b) + 1))
    for i, item_a in enumerate(a, start=1):
        current = [i]
        for j, item_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (item_a != item_b)))
        previous = current
    return previous[-1]


def pairwise_cer(hyps: Sequence[str]) -> float:
    """Mean symmetric CER (percent) over unordered pairs of teacher transcripts.

    Parameters
    ----------
    hyps : sequence of str
        One greedy transcript per teacher (at least one).

    Returns
    -------
    float
        ``mean_{a<b} 100 * edit(a, b) / max(len(a), len(b))``; 0 for a single
        teacher or two empty transcripts.
    """
    pairs = list(itertools.combinations(hyps, 2))
    if not pairs:
        return 0.0
    return float(np.mean([100.0 * edit_distance(a, b) / max(len(a), len(b), 1) for a, b in pairs]))


def ensemble_confidence(probs: torch.Tensor, blank: int = 0) -> float:
    """Mean top probability of the averaged ensemble over its non-blank frames.

    Parameters
    ----------
    probs : torch.Tensor
        ``(teachers, time, vocab)`` per-teacher probabilities on a common
        frame rate and inventory (valid frames only).
    blank : int
        Blank index.

    Returns
    -------
    float
        In ``[0, 1]``; over all frames when the ensemble emits only blanks.
    """
    top, argmax = probs.mean(0).max(-1)
    spoken = argmax != blank
    return float(top[spoken].mean() if spoken.any() else top.mean())


def utterance_agreement(probs: torch.Tensor, symbols: Sequence[str], blank: int = 0) -> dict:
    """Both agreement scores of one utterance, plus the teachers' greedy transcripts.

    Parameters
    ----------
    probs : torch.Tensor
        ``(teachers, time, vocab)`` per-teacher probabilities (common rate and inventory).
    symbols : sequence of str
        The inventory's symbols (index -> symbol).

    Returns
    -------
    dict
        ``confidence`` (float), ``teacher_cer`` (float, percent), ``hyps`` (list of str).
    """
    hyps = [ids_to_text(greedy_collapse(p.argmax(-1).cpu().numpy(), blank), symbols) for p in probs]
    return {"confidence": ensemble_confidence(probs, blank), "teacher_cer": pairwise_cer(hyps),
            "hyps": hyps}


def keeps(scores: Mapping, method: str, threshold: float) -> bool:
    """Whether an utterance with ``scores`` passes the filter (see the module doc)."""
    if method == "confidence":
        return scores["confidence"] >= threshold
    if method == "teacher_cer":
        return scores["teacher_cer"] <= threshold
    raise ValueError(f"unknown agreement filter method {method!r}; choose one of {METHODS}")


def agreement_filter(scores: Mapping[str, Mapping], method: str, threshold: float):
    """Keep the utterances on which the teachers agree, and log the kept share.

    Parameters
    ----------
    scores : mapping
        Utterance ID -> ``{"confidence", "teacher_cer", ...}`` (see
        :func:`utterance_agreement`).
    method : str
        ``confidence`` or ``teacher_cer``.
    threshold : float
        Minimum confidence (0..1), or maximum teacher-to-teacher CER (percent).

    Returns
    -------
    kept : list of str
        IDs kept, in the order of ``scores``.
    report : dict
        ``method``, ``threshold``, ``offered``, ``kept``, ``kept_share``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown agreement filter method {method!r}; choose one of {METHODS}")
    kept = [utt for utt, s in scores.items() if keeps(s, method, threshold)]
    share = len(kept) / len(scores) if scores else 0.0
    report = {"method": method, "threshold": threshold, "offered": len(scores), "kept": len(kept),
              "kept_share": share}
    logger.info("agreement filter (%s, threshold %s): kept %d of %d unlabelled utterances (%.1f%%)",
                method, threshold, len(kept), len(scores), 100.0 * share)
    return kept, report


def cache_agreement_scores(cache, utt_ids: Sequence[str], batch_size: int = 16) -> dict:
    """Agreement scores of cached utterances (see :func:`utterance_agreement`).

    Each teacher's cached distribution is brought to the coarsest teacher's
    frame rate by :meth:`TeacherTarget.teacher_probs <speechkd.distill.target.TeacherTarget.teacher_probs>`
    (dense reconstruction, pooling, length matching: what the KD target does), then scored.

    Parameters
    ----------
    cache : speechkd.distill.cache.PosteriorCache
        Teachers sharing one inventory (what :class:`TeacherEnsemble` caches).
    utt_ids : sequence of str
        Utterances to score (all must be cached).
    batch_size : int
        Utterances read from the cache at a time.

    Returns
    -------
    dict
        Utterance ID -> scores, in ``utt_ids`` order.

    Raises
    ------
    ValueError
        If the teachers' inventories differ.
    """
    if len({tuple(symbols) for symbols in cache.symbols}) != 1:
        raise ValueError(f"teachers {cache.teacher_names} have different inventories; "
                         "the agreement filter needs one inventory")
    symbols = list(cache.symbols[0])
    common = TeacherTarget(cache, symbols, max(cache.frame_shifts_ms), oov_mode="renormalize")
    utt_ids = list(utt_ids)
    scores = {}
    for start in range(0, len(utt_ids), batch_size):
        chunk = utt_ids[start : start + batch_size]
        teacher = cache.collate(chunk)
        frames = common.pooled_frames(teacher)
        probs = common.teacher_probs(teacher, frames, int(frames.max()))[..., :-1]  # drop the (empty) OOV column
        for row, utt in enumerate(chunk):
            scores[utt] = utterance_agreement(probs[row, :, : int(frames[row])], symbols)
    return scores
