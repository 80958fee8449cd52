"""Spike-timing agreement between CTC teachers, and WER of each fused posterior.

CTC teachers trained apart emit their non-blank spikes on different frames;
averaging their posteriors frame by frame then blurs them. This diagnostic
measures it on a posterior cache:

* a *spike* of a teacher is a frame (at the common rate) whose argmax is not
  blank; its token is that argmax;
* teacher a's spike at frame t *agrees* with teacher b if b has a spike of
  the same token at a frame in ``[t - tolerance, t + tolerance]``;
* ``pairwise[a][b]`` = fraction of a's spikes that agree with b (directional);
  ``overall`` = agreeing spikes / spikes, summed over all ordered pairs.

It also greedy-decodes each teacher and each fused posterior (one per ensemble
strategy, at τ = 1) and reports their corpus WER against the transcripts.
Teachers are brought onto the union of their symbols at the common rate by a
:class:`~speechkd.distill.target.TeacherTarget` (``oov_mode="renormalize"``),
the same code the KD target and the ensemble evaluation run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jiwer
import numpy as np
import torch

from speechkd.distill.cache import PosteriorCache
from speechkd.distill.target import TeacherTarget
from speechkd.text import BLANK

DEFAULT_STRATEGIES = ("average", "geometric", "weighted", "best", "confidence")


def _common_symbols(symbol_lists: Sequence[Sequence[str]]) -> list[str]:
    """Every teacher's symbols once, the blank first (index 0, where the spike and decoding helpers expect it)."""
    seen: dict[str, None] = {BLANK: None}
    for symbols in symbol_lists:
        for s in symbols:
            seen.setdefault("<space>" if s == " " else s, None)
    return list(seen)


def greedy_collapse(frame_tokens: np.ndarray, blank: int = 0) -> list[int]:
    """CTC greedy collapse of ``(time,)`` argmax ids: merge repeats, drop blanks."""
    out, previous = [], None
    for token in frame_tokens.tolist():
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


def ids_to_text(ids: Sequence[int], symbols: Sequence[str]) -> str:
    """Token ids -> text; ``<space>`` (or ``" "``) separates words."""
    text = "".join(
        " " if symbols[i] in (" ", "<space>") else symbols[i] for i in ids if i < len(symbols)
    )
    return " ".join(text.split())


def spike_tokens(probs: np.ndarray, blank: int = 0) -> np.ndarray:
    """``(time,)`` argmax token where it is not blank, else -1 (``probs`` is ``(time, dim)``)."""
    best = probs.argmax(-1)
    return np.where(best == blank, -1, best)


def spike_offsets(reference: np.ndarray, other: np.ndarray, window: int = 10) -> list[int]:
    """Frame offsets of ``other``'s spikes relative to ``reference``'s, token by token.

    For each spike (first frame of a run of one non-blank token) of
    ``reference``, the nearest spike of the same token in ``other`` within
    ``window`` frames gives ``frame_other - frame_reference``; unmatched
    spikes are left out. Both arrays are ``(time,)`` of :func:`spike_tokens`.

    Returns
    -------
    list of int
        Positive when ``other`` spikes later (a causal student after a
        full-context teacher): its median is what ``teacher_delay`` should be.
    """

    def onsets(tokens):
        return [(t, tok) for t, tok in enumerate(tokens.tolist())
                if tok >= 0 and (t == 0 or tokens[t - 1] != tok)]

    candidates = onsets(other)
    offsets = []
    for frame, token in onsets(reference):
        near = [t - frame for t, tok in candidates if tok == token and abs(t - frame) <= window]
        if near:
            offsets.append(min(near, key=abs))
    return offsets


def agreeing_spikes(a: np.ndarray, b: np.ndarray, tolerance: int = 1) -> tuple[int, int]:
    """``(agreeing, total)`` spikes of ``a`` matched by a same-token spike of ``b`` within ``tolerance`` frames."""
    spikes = np.flatnonzero(a >= 0)
    if spikes.size == 0:
        return 0, 0
    hit = np.zeros(spikes.size, dtype=bool)
    for shift in range(-tolerance, tolerance + 1):
        where = spikes + shift
        inside = (where >= 0) & (where < b.size)
        hit[inside] |= b[where[inside]] == a[spikes[inside]]
    return int(hit.sum()), int(spikes.size)


def _wer(refs: list[str], hyps: list[str]) -> float:
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return float("nan")
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def teacher_agreement(
    cache,
    manifest_rows: Sequence[dict],
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    frame_shift_ms: int | None = None,
    tolerance: int = 1,
    batch_size: int = 16,
    wer_temperature: float = 10.0,
) -> dict:
    """Spike-timing agreement and fused-posterior WER for a posterior cache.

    Parameters
    ----------
    cache : PosteriorCache
    manifest_rows : sequence of dict
        Manifest rows (``ID`` and ``wrd``); rows not in the cache are counted
        as ``missing`` and skipped.
    strategies : sequence of str
        Ensemble strategies to decode. ``best`` needs per-utterance teacher
        errors and ``weighted`` the dev WER in the cache; without them they
        are listed under ``skipped`` with the reason.
    frame_shift_ms : int, optional
        Common rate; defaults to the coarsest teacher shift.
    tolerance : int
        Frames within which spikes agree.

    Returns
    -------
    dict
        ``n_utts``, ``missing``, ``frame_shift_ms``, ``tolerance``,
        ``teachers``, ``spikes`` {teacher: count}, ``pairwise``
        {a: {b: fraction}}, ``overall``, ``wer`` {"teacher <name>" or
        strategy: percent}, ``skipped`` {strategy: reason}.
    """
    names = cache.teacher_names
    shift = frame_shift_ms or max(cache.frame_shifts_ms)
    symbols = _common_symbols(cache.symbols)
    rows = [r for r in manifest_rows if r["ID"] in cache]
    runnable, skipped = runnable_strategies(cache, rows, strategies)

    def target(strategy="average"):
        return TeacherTarget(cache, symbols, shift, strategy=strategy,
                             strategy_options={"wer_temperature": wer_temperature}, oov_mode="renormalize")

    projector = target()
    fusers = {strategy: target(strategy) for strategy in runnable}
    counts = SpikeCounts(len(names))
    refs: list[str] = []
    hyps: dict[str, list[str]] = {f"teacher {name}": [] for name in names}
    hyps.update({s: [] for s in runnable})
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        teacher = cache.collate([r["ID"] for r in chunk])
        frames = projector.pooled_frames(teacher)
        probs = projector.teacher_probs(teacher, frames, int(frames.max()), 1.0)  # (batch, teachers, time, V+1)
        fused = {s: fuser.fuse(probs, teacher) for s, fuser in fusers.items()}
        for b, row in enumerate(chunk):
            length = int(frames[b])
            refs.append(row["wrd"])
            counts.add([spike_tokens(probs[b, i, :length, :-1].numpy()) for i in range(len(names))], tolerance)
            for i, name in enumerate(names):
                hyps[f"teacher {name}"].append(_decode(probs[b, i, :length], symbols))
            for s in runnable:
                hyps[s].append(_decode(fused[s][b, :length], symbols))
    return {
        "n_utts": len(rows),
        "missing": len(manifest_rows) - len(rows),
        "frame_shift_ms": shift,
        "tolerance": tolerance,
        "teachers": list(names),
        **counts.summary(names),
        "wer": {key: _wer(refs, hyp) for key, hyp in hyps.items()},
        "skipped": skipped,
    }


def runnable_strategies(cache, rows: Sequence[dict], strategies: Sequence[str]) -> tuple[list, dict]:
    """The strategies the cache can decode, and ``{strategy: reason}`` for the others."""
    runnable, skipped = [], {}
    for strategy in strategies:
        if strategy == "weighted" and cache.dev_wer_list() is None:
            skipped[strategy] = "no dev WER in the cache"
        elif strategy == "best" and any(cache.teacher_error(r["ID"]) is None for r in rows):
            skipped[strategy] = "per-utterance teacher errors missing in the cache"
        else:
            runnable.append(strategy)
    return runnable, skipped


class SpikeCounts:
    """Running counts of spikes per teacher and of agreeing spikes per ordered teacher pair."""

    def __init__(self, n_teachers: int):
        self.hits = np.zeros((n_teachers, n_teachers), dtype=np.int64)
        self.totals = np.zeros((n_teachers, n_teachers), dtype=np.int64)
        self.spikes = np.zeros(n_teachers, dtype=np.int64)

    def add(self, tokens: Sequence[np.ndarray], tolerance: int) -> None:
        """One utterance: each teacher's :func:`spike_tokens` at the common rate."""
        n = len(tokens)
        for i in range(n):
            self.spikes[i] += int((tokens[i] >= 0).sum())
            for j in range(n):
                if i != j:
                    agree, total = agreeing_spikes(tokens[i], tokens[j], tolerance)
                    self.hits[i, j] += agree
                    self.totals[i, j] += total

    def summary(self, names: Sequence[str]) -> dict:
        """``spikes`` {teacher: count}, ``pairwise`` {a: {b: fraction}} and ``overall``."""
        n = len(names)
        pairwise = {names[i]: {names[j]: (self.hits[i, j] / self.totals[i, j] if self.totals[i, j]
                                          else float("nan")) for j in range(n) if j != i}
                    for i in range(n)}
        off_diagonal = ~np.eye(n, dtype=bool)
        total = self.totals[off_diagonal].sum()
        return {"spikes": {names[i]: int(self.spikes[i]) for i in range(n)}, "pairwise": pairwise,
                "overall": float(self.hits[off_diagonal].sum() / total) if total else float("nan")}


def _decode(probs: torch.Tensor, symbols: Sequence[str]) -> str:
    return ids_to_text(greedy_collapse(probs[:, :-1].argmax(-1).numpy()), symbols)


def format_agreement(report: dict) -> str:
    """Markdown tables: pairwise spike agreement and WER per teacher / strategy."""
    names = report["teachers"]
    lines = [
        (
            f"Spike-timing agreement over {report['n_utts']} utterances at {report['frame_shift_ms']} ms "
            f"(same token within ±{report['tolerance']} frame; row teacher's spikes matched in column teacher)"
        ),
        "",
        "| teacher | spikes | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for a in names:
        cells = ["—" if a == b else f"{100 * report['pairwise'][a][b]:.1f}%" for b in names]
        lines.append(f"| {a} | {report['spikes'][a]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Overall agreement: {100 * report['overall']:.1f}%",
        "",
        "| posterior | greedy WER % |",
        "|---|---:|",
    ]
    for key, value in report["wer"].items():
        lines.append(f"| {key} | {value:.2f} |")
    for key, reason in report["skipped"].items():
        lines.append(f"| {key} | skipped: {reason} |")
    if report["missing"]:
        lines += ["", f"{report['missing']} manifest rows not in the cache were skipped."]
    return "\n".join(lines)


def agreement_for_cache_folder(
    folder: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
) -> str:
    """``speechkd teachers agreement <cache>``: open a cache, run the report, format it.

    Parameters
    ----------
    folder : path
        Posterior cache folder.
    manifest : path, optional
        Manifest CSV with the transcripts. Defaults to ``meta["manifest"]``,
        the manifest the caching recipe recorded (absolute, or relative to
        the cache folder).

    Raises
    ------
    ValueError
        If no manifest is given and the cache does not name one.
    """
    from speechkd.data.manifest import read_manifest

    cache = PosteriorCache.open(folder)
    if manifest is None:
        recorded = cache.meta.get("manifest")
        if not recorded:
            raise ValueError(
                f"posterior cache {folder} does not record its manifest; pass --manifest <csv>"
            )
        manifest = Path(folder) / recorded
    rows = read_manifest(manifest, allow_empty_wrd=True)
    return format_agreement(teacher_agreement(cache, rows, strategies))
