"""Word and character error rates (jiwer), SpeechBrain ``wer_<set>.txt`` files, results.json.

Rates are corpus-level: total edits over total reference words (or
characters), overall and per language / per domain. An utterance with an
empty reference is scored (all hypothesis words are insertions) and counted
in ``n_empty_ref``; a group whose references hold no word at all has
``wer``/``cer`` ``None`` rather than a division by zero.

Example
-------
>>> rates = ErrorRates()
>>> rates.append(["u1"], ["the cat sat"], ["the cat sat down"], langs=["en"])
>>> round(rates.summary()["wer"], 2)
33.33
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np
import torch
from speechbrain.dataio.wer import print_alignments, print_wer_summary

_OPS = {"equal": "=", "substitute": "S", "delete": "D", "insert": "I"}


@dataclass
class _Counts:
    """Edit counts of one utterance or one group of utterances."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_len: int = 0

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def add(self, other: _Counts) -> None:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.ref_len += other.ref_len

    def rate(self) -> float | None:
        """Percent errors, ``None`` when there is no reference token."""
        if self.ref_len == 0:
            return None
        return 100.0 * self.edits / self.ref_len


@dataclass
class _Utterance:
    utt_id: str
    ref: str
    hyp: str
    lang: str | None
    domain: str | None
    words: _Counts
    chars: _Counts
    alignment: list = field(default_factory=list)
    ref_tokens: list = field(default_factory=list)
    hyp_tokens: list = field(default_factory=list)


def _word_counts(ref: str, hyp: str) -> tuple[_Counts, list, list, list]:
    out = jiwer.process_words(ref, hyp)
    counts = _Counts(out.substitutions, out.deletions, out.insertions, len(out.references[0]))
    alignment = []
    for chunk in out.alignments[0]:
        op = _OPS[chunk.type]
        ref_span = range(chunk.ref_start_idx, chunk.ref_end_idx)
        hyp_span = range(chunk.hyp_start_idx, chunk.hyp_end_idx)
        if op == "D":
            alignment += [(op, r, None) for r in ref_span]
        elif op == "I":
            alignment += [(op, None, h) for h in hyp_span]
        else:
            alignment += [(op, r, h) for r, h in zip(ref_span, hyp_span)]
    return counts, alignment, out.references[0], out.hypotheses[0]


def _char_counts(ref: str, hyp: str) -> _Counts:
    ref, hyp = " ".join(ref.split()), " ".join(hyp.split())
    if not ref and not hyp:
        return _Counts()
    if not ref:
        return _Counts(insertions=len(hyp))
    if not hyp:
        return _Counts(deletions=len(ref), ref_len=len(ref))
    out = jiwer.process_characters(ref, hyp)
    return _Counts(out.substitutions, out.deletions, out.insertions, len(ref))


class ErrorRates:
    """Accumulates references and hypotheses; reports WER/CER overall and per group."""

    def __init__(self):
        self.utterances: list[_Utterance] = []

    def append(
        self,
        ids: Sequence[str],
        refs: Sequence[str],
        hyps: Sequence[str],
        langs: Sequence[str] | None = None,
        domains: Sequence[str] | None = None,
    ) -> None:
        """Score a batch.

        Parameters
        ----------
        ids, refs, hyps : sequence of str
            Utterance ids, reference and hypothesis transcripts (normalized text).
        langs, domains : sequence of str or None
            Per-utterance language / domain for the per-group rates.
        """
        n = len(ids)
        for name, values in (("refs", refs), ("hyps", hyps), ("langs", langs), ("domains", domains)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} ids")
        for i in range(n):
            words, alignment, ref_tokens, hyp_tokens = _word_counts(refs[i], hyps[i])
            self.utterances.append(
                _Utterance(
                    utt_id=str(ids[i]),
                    ref=refs[i],
                    hyp=hyps[i],
                    lang=langs[i] if langs is not None else None,
                    domain=domains[i] if domains is not None else None,
                    words=words,
                    chars=_char_counts(refs[i], hyps[i]),
                    alignment=alignment,
                    ref_tokens=ref_tokens,
                    hyp_tokens=hyp_tokens,
                )
            )

    def gathered(self) -> ErrorRates:
        """Every rank's utterances (under torch.distributed), each utterance once, in ID order.

        A distributed sampler pads a rank's share by repeating utterances; they
        are counted once here. Without torch.distributed the rates come back as
        they are.
        """
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return self
        shares = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shares, self.utterances)
        merged = ErrorRates()
        merged.utterances = sorted({utt.utt_id: utt for share in shares for utt in share}.values(),
                                   key=lambda utt: utt.utt_id)
        return merged

    @staticmethod
    def _group_summary(utterances: list[_Utterance]) -> dict:
        words, chars = _Counts(), _Counts()
        for utt in utterances:
            words.add(utt.words)
            chars.add(utt.chars)
        return {
            "wer": words.rate(),
            "cer": chars.rate(),
            "n": len(utterances),
            "n_empty_ref": sum(1 for u in utterances if u.words.ref_len == 0),
            "word_edits": words.edits,
            "ref_words": words.ref_len,
            "insertions": words.insertions,
            "deletions": words.deletions,
            "substitutions": words.substitutions,
            "char_edits": chars.edits,
            "ref_chars": chars.ref_len,
        }

    def _by(self, key: str) -> dict[str, dict]:
        groups: dict[str, list[_Utterance]] = {}
        for utt in self.utterances:
            value = getattr(utt, key)
            if value is not None:
                groups.setdefault(value, []).append(utt)
        out = {}
        for name in sorted(groups):
            full = self._group_summary(groups[name])
            out[name] = {k: full[k] for k in ("wer", "cer", "n", "n_empty_ref")}
        return out

    def summary(self) -> dict:
        """Overall and per-group rates.

        Returns
        -------
        dict
            ``wer``, ``cer`` (percent, corpus level, ``None`` without any
            reference token), ``n_utts``, ``n_empty_ref``, the word edit
            counts, ``per_lang`` and ``per_domain`` mapping each value to
            ``{"wer", "cer", "n", "n_empty_ref"}``.
        """
        overall = self._group_summary(self.utterances)
        overall["n_utts"] = overall.pop("n")
        overall["per_lang"] = self._by("lang")
        overall["per_domain"] = self._by("domain")
        return overall

    def intervals(self, n_resamples: int = 2000, seed: int = 0) -> dict:
        """WER and CER with 95 % bootstrap intervals over utterances, overall and per language.

        Returns
        -------
        dict
            ``{"wer": ..., "cer": ..., "per_lang": {lang: {"wer": ..., "cer": ...}}}``,
            each a :func:`bootstrap_rate` dict.
        """

        def both(utterances):
            return {"wer": bootstrap_rate([(u.words.edits, u.words.ref_len) for u in utterances], n_resamples, seed),
                    "cer": bootstrap_rate([(u.chars.edits, u.chars.ref_len) for u in utterances], n_resamples, seed)}

        langs = sorted({u.lang for u in self.utterances if u.lang is not None})
        return {**both(self.utterances),
                "per_lang": {lang: both([u for u in self.utterances if u.lang == lang]) for lang in langs}}

    def speechbrain_stats(self) -> tuple[dict, list[dict]]:
        """The summary and per-utterance dicts SpeechBrain's ``dataio.wer`` printers take."""
        details = []
        for utt in self.utterances:
            w = utt.words
            details.append({
                "key": utt.utt_id,
                "scored": True,
                "hyp_absent": False,
                "hyp_empty": len(utt.hyp_tokens) == 0,
                "num_edits": w.edits,
                "num_ref_tokens": w.ref_len,
                "WER": 100.0 * w.edits / max(w.ref_len, 1),
                "insertions": w.insertions,
                "deletions": w.deletions,
                "substitutions": w.substitutions,
                "alignment": utt.alignment,
                "ref_tokens": utt.ref_tokens,
                "hyp_tokens": utt.hyp_tokens,
            })
        overall = self._group_summary(self.utterances)
        n = len(self.utterances)
        erroneous = sum(1 for d in details if d["num_edits"] > 0)
        summary = {
            "WER": overall["wer"] if overall["wer"] is not None else 0.0,
            "SER": 100.0 * erroneous / n if n else 0.0,
            "num_edits": overall["word_edits"],
            "num_scored_tokens": overall["ref_words"],
            "num_erroneous_sents": erroneous,
            "num_scored_sents": n,
            "num_absent_sents": 0,
            "num_ref_sents": n,
            "insertions": overall["insertions"],
            "deletions": overall["deletions"],
            "substitutions": overall["substitutions"],
        }
        return summary, details

    def write_wer_file(self, path: str | os.PathLike) -> None:
        """Write SpeechBrain's ``wer_<set>.txt``: %WER/%SER summary then per-utterance alignments."""
        summary, details = self.speechbrain_stats()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            print_wer_summary(summary, file=handle)
            print_alignments(details, file=handle)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_results_json(path: str | os.PathLike, payload: dict) -> dict:
    """Merge ``payload`` into the JSON object at ``path`` (nested dicts merged key by key).

    The file is replaced atomically. Returns the merged object.
    """
    path = Path(path)
    existing = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(existing, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(existing).__name__}")
    merged = _deep_merge(existing, payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(merged, handle, indent=2, sort_keys=True, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
    return merged


_UTTERANCE_LINE = re.compile(r"^(\S+), %WER [\d.]+ \[ (\d+) / (\d+),", flags=re.MULTILINE)


def wer_file_name(set_name: str, lexicon: bool = False) -> str:
    """``wer_<set_name>.txt``, or ``wer_<set_name>_lexicon.txt`` for lexicon decoding
    (:class:`speechkd.decoding.LexiconDecoder`), beside each other in one folder."""
    return f"wer_{set_name}{'_lexicon' if lexicon else ''}.txt"


def read_utterance_errors(wer_file: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Per-utterance ``(word edits, reference words)`` from a ``wer_<set>.txt`` (SpeechBrain's format)."""
    with open(wer_file, encoding="utf-8") as fin:
        return {utt: (int(edits), int(words)) for utt, edits, words in _UTTERANCE_LINE.findall(fin.read())}


def read_utterance_char_errors(wer_file: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Per-utterance ``(character edits, reference characters)`` from a ``wer_<set>.txt``.

    The reference and hypothesis are read back from each utterance's word
    alignment (``<eps>`` dropped) and scored as :class:`ErrorRates` scores CER,
    so :func:`paired_bootstrap_wer` gives CER intervals from these counts too.
    """
    with open(wer_file, encoding="utf-8") as fin:
        lines = fin.read().splitlines()
    errors = {}
    for index, line in enumerate(lines):
        match = _UTTERANCE_LINE.match(line)
        if match and index + 3 < len(lines):
            ref, hyp = (" ".join(t.strip() for t in lines[index + row].split(";") if t.strip() not in ("", "<eps>"))
                        for row in (1, 3))
            counts = _char_counts(ref, hyp)
            errors[match.group(1)] = (counts.edits, counts.ref_len)
    return errors


def bootstrap_error_rates(errors_by_system: dict, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Error rates of several systems on the same resampled test sets (a paired bootstrap).

    Each resample draws the utterances all systems decoded with replacement,
    once, and recomputes every system's rate from its summed edits over the
    summed reference length, so any statistic of the systems' rates (a
    difference, a ratio such as the gap closed) gets its interval from the
    same draws.

    Parameters
    ----------
    errors_by_system : dict
        System name -> {utterance ID -> ``(edits, reference length)``}, e.g.
        from :func:`read_utterance_errors` or :func:`read_utterance_char_errors`.
    n_resamples : int
    seed : int

    Returns
    -------
    dict
        ``rates`` (name -> rate in % on all shared utterances), ``draws``
        (name -> array of shape ``(n_resamples,)``: the rate in each
        resample) and ``n_utts``.
    """
    shared = sorted(set.intersection(*(set(errors) for errors in errors_by_system.values())))
    if not shared:
        raise ValueError(f"the systems {sorted(errors_by_system)} share no utterance")
    counts = {name: np.array([errors[u] for u in shared], dtype=np.float64)
              for name, errors in errors_by_system.items()}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(shared), (n_resamples, len(shared)))  # (resample, utterance)
    # each system over its own reference length: a system pooled over seeds counts every
    # utterance's words once per seed, beside one decoded once
    return {
        "rates": {name: 100.0 * c[:, 0].sum() / max(c[:, 1].sum(), 1.0) for name, c in counts.items()},
        "draws": {name: 100.0 * c[draws, 0].sum(axis=1) / np.maximum(c[draws, 1].sum(axis=1), 1.0)
                  for name, c in counts.items()},
        "n_utts": len(shared),
    }


def interval(draws) -> tuple[float, float]:
    """The 95 % percentile interval ``(low, high)`` of bootstrap draws (non-finite draws ignored)."""
    draws = np.asarray(draws, dtype=np.float64)
    low, high = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap_wer(errors_a: dict, errors_b: dict, n_resamples: int = 2000, seed: int = 0) -> dict:
    """WER(b) − WER(a) on the utterances both systems decoded, with a 95 % bootstrap interval.

    Utterances are resampled with replacement (the same draw for both systems),
    and each resample's WER difference is recomputed from summed edits and words
    (:func:`bootstrap_error_rates`).

    Parameters
    ----------
    errors_a, errors_b : dict
        Utterance ID -> ``(word edits, reference words)``, e.g. from :func:`read_utterance_errors`.
    n_resamples : int
    seed : int

    Returns
    -------
    dict
        ``difference`` (percentage points), ``low`` and ``high`` (2.5 and 97.5
        percentiles), ``n_utts``.
    """
    boot = bootstrap_error_rates({"a": errors_a, "b": errors_b}, n_resamples, seed)
    low, high = interval(boot["draws"]["b"] - boot["draws"]["a"])
    return {"difference": float(boot["rates"]["b"] - boot["rates"]["a"]), "low": low, "high": high,
            "n_utts": boot["n_utts"]}


def bootstrap_rate(errors: Sequence[tuple[int, int]], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Corpus-level error rate of one system with a 95 % bootstrap interval over utterances.

    Parameters
    ----------
    errors : sequence of (int, int)
        Per utterance ``(edits, reference tokens)`` (words for WER, characters for CER).
    n_resamples : int
    seed : int

    Returns
    -------
    dict
        ``rate``, ``low``, ``high`` (percent; ``None`` without any reference
        token) and ``n_utts``.
    """
    counts = np.asarray(errors, dtype=np.float64).reshape(-1, 2)
    if counts[:, 1].sum() == 0:
        return {"rate": None, "low": None, "high": None, "n_utts": len(counts)}
    boot = bootstrap_error_rates({"system": dict(enumerate(map(tuple, counts)))}, n_resamples, seed)
    low, high = interval(boot["draws"]["system"])
    return {"rate": float(boot["rates"]["system"]), "low": low, "high": high, "n_utts": len(counts)}
