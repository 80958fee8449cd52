"""CTC decoding: batched greedy (torch) and prefix beam search (numpy, log domain)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

_NEG_INF = -np.inf


def ctc_greedy(log_probs: torch.Tensor, lengths_abs: torch.Tensor | Sequence[int],
               blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks.

    Parameters
    ----------
    log_probs : torch.Tensor
        (batch, time, V) log-probabilities (or logits: only the argmax matters).
    lengths_abs : torch.Tensor or sequence of int
        (batch,) number of valid frames per utterance.
    blank : int
        Index of the CTC blank.

    Returns
    -------
    list of list of int
        Token ids per utterance.
    """
    best = log_probs.argmax(dim=-1)  # (batch, time)
    previous = torch.nn.functional.pad(best, (1, 0), value=blank)[:, :-1]
    keep = (best != blank) & (best != previous)
    lengths = torch.as_tensor(lengths_abs).long().tolist()
    keep, best = keep.cpu(), best.cpu()
    return [best[i, :n][keep[i, :n]].tolist() for i, n in enumerate(lengths)]


def _logsumexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + float(np.log1p(np.exp(-abs(a - b))))


def ctc_prefix_beam(log_probs: torch.Tensor | np.ndarray, beam: int = 8, blank: int = 0,
                    token_beam: int | None = None, return_score: bool = False):
    """CTC prefix beam search in the log domain (no language model).

    Each prefix keeps two scores: paths ending in blank and in its last
    token. Repeating the last token without a blank in between does not
    extend the prefix. All ``stay`` transitions are exact; only the tokens
    that may *extend* a prefix are pruned to the ``token_beam`` best of the
    frame.

    Parameters
    ----------
    log_probs : torch.Tensor or numpy.ndarray
        (time, V) log-probabilities of one utterance (valid frames only).
    beam : int
        Prefixes kept after each frame.
    blank : int
        Index of the CTC blank.
    token_beam : int or None
        Candidate extension tokens per frame (default: ``beam``; ``None``
        with ``beam >= V`` means all).
    return_score : bool
        Also return the prefix's total log-probability.

    Returns
    -------
    list of int, or (list of int, float)
        The best prefix (token ids), and its log-probability if asked.
    """
    if isinstance(log_probs, torch.Tensor):
        log_probs = log_probs.detach().cpu().double().numpy()
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2:
        raise ValueError(f"expected (time, V) log-probabilities, got shape {log_probs.shape}")
    n_tokens = log_probs.shape[1]
    n_candidates = min(n_tokens, token_beam or beam)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}
    for frame in log_probs:
        candidates = np.argpartition(-frame, n_candidates - 1)[:n_candidates]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [_NEG_INF, _NEG_INF])
        for prefix, (p_blank, p_token) in beams.items():
            p_total = _logsumexp(p_blank, p_token)
            entry = nxt[prefix]
            entry[0] = _logsumexp(entry[0], p_total + frame[blank])
            if prefix:
                last = prefix[-1]
                entry[1] = _logsumexp(entry[1], p_token + frame[last])
            for token in candidates:
                token = int(token)
                if token == blank:
                    continue
                extended = nxt[prefix + (token,)]
                source = p_blank if prefix and token == prefix[-1] else p_total
                extended[1] = _logsumexp(extended[1], source + frame[token])
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked[:beam]}
    best_prefix, (p_blank, p_token) = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    if return_score:
        return list(best_prefix), _logsumexp(p_blank, p_token)
    return list(best_prefix)


def ctc_path_log_prob(log_probs: torch.Tensor | np.ndarray, labels: Sequence[int],
                      blank: int = 0) -> float:
    """log P(labels | log_probs) summed over all CTC alignments (torch's ctc_loss)."""
    lp = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64).unsqueeze(1)
    target = torch.as_tensor(list(labels), dtype=torch.long).unsqueeze(0)
    loss = torch.nn.functional.ctc_loss(
        lp, target, torch.tensor([lp.shape[0]]), torch.tensor([len(labels)]),
        blank=blank, reduction="sum", zero_infinity=False,
    )
    return -float(loss)


def greedy_transcripts(log_probs: torch.Tensor, frames: torch.Tensor, inventory) -> list[str]:
    """Greedy CTC transcripts of a batch.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(batch, time, V)`` log-probabilities.
    frames : torch.Tensor
        ``(batch,)`` valid frames (absolute).
    inventory : speechkd.text.TokenInventory
        Gives the blank and the symbols.

    Returns
    -------
    list of str
    """
    return [inventory.decode(ids) for ids in ctc_greedy(log_probs, frames, inventory.blank_index)]
