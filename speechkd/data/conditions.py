"""Training conditions for robustness studies: corrupted transcripts and long-tailed languages.

Both rewrite a train manifest's rows (SpeechBrain CSV) and return a record of
what they did, so a run can be reproduced and audited: the corruption is
seeded and every changed utterance is listed with its original transcript.

- :func:`corrupt_transcripts`: a share of the utterances gets a wrong
  transcript, half (``swap_share``) by swapping transcripts between
  utterances of the same language, the rest by substituting words with words
  drawn from that language's vocabulary in the manifest (each word with
  probability ``word_rate``, at least one per utterance).
- :func:`long_tailed_subset`: keeps each language's utterances in given
  ratios (e.g. ``{en: 100, de: 10, es: 1}``: all of ``en``, a tenth of ``de``,
  a hundredth of ``es``, at least ``min_utterances``).
"""

from __future__ import annotations

import collections

import numpy as np


def _rng(seed, *parts) -> np.random.Generator:
    from speechkd.data.corpus import stable_rng

    return stable_rng("conditions", seed, *parts)


def corrupt_transcripts(rows: list[dict], rate: float, seed: int = 0, swap_share: float = 0.5,
                        word_rate: float = 0.5) -> tuple[list[dict], list[dict]]:
    """Corrupt the transcripts of ``round(rate * len(rows))`` utterances.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (``ID``, ``lang``, ``wrd``, ...); not modified.
    rate : float
        Share of utterances corrupted, in [0, 1].
    seed : int
    swap_share : float
        Share of the corrupted utterances whose transcript is swapped with
        another's (same language, rotated among them); the rest get word substitutions.
    word_rate : float
        Probability that a word of a substituted transcript is replaced.

    Returns
    -------
    rows : list of dict
        The manifest with the corrupted transcripts.
    record : list of dict
        One ``{"ID", "kind" ("swap" | "substitute"), "original", "corrupted"}``
        per utterance whose transcript changed.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"corruption rate must be in [0, 1], got {rate}")
    rng = _rng(seed, rate)
    rows = [dict(row) for row in rows]
    chosen = sorted(rng.choice(len(rows), size=round(rate * len(rows)), replace=False).tolist())
    n_swap = round(swap_share * len(chosen))
    order = rng.permutation(chosen).tolist()
    swapped, substituted = order[:n_swap], order[n_swap:]
    original = {i: rows[i]["wrd"] for i in chosen}
    by_lang = collections.defaultdict(list)
    for i in sorted(swapped):
        by_lang[rows[i]["lang"]].append(i)
    for group in by_lang.values():  # rotate within a language: each takes the next one's transcript
        for position, i in enumerate(group):
            rows[i]["wrd"] = original[group[(position + 1) % len(group)]]
    vocabulary = collections.defaultdict(set)
    for row in rows:
        vocabulary[row["lang"]].update(row["wrd"].split())
    vocabulary = {lang: sorted(words) for lang, words in vocabulary.items()}
    for i in sorted(substituted):
        words, lang_words = rows[i]["wrd"].split(), vocabulary[rows[i]["lang"]]
        if not words:
            continue
        replace = rng.random(len(words)) < word_rate
        replace[rng.integers(len(words))] = True
        rows[i]["wrd"] = " ".join(lang_words[rng.integers(len(lang_words))] if r else w
                                  for w, r in zip(words, replace))
    kinds = {**dict.fromkeys(swapped, "swap"), **dict.fromkeys(substituted, "substitute")}
    record = [{"ID": rows[i]["ID"], "kind": kinds[i], "original": original[i], "corrupted": rows[i]["wrd"]}
              for i in chosen if rows[i]["wrd"] != original[i]]
    return rows, record


def long_tailed_subset(rows: list[dict], ratios: dict, seed: int = 0, min_utterances: int = 2
                       ) -> tuple[list[dict], dict]:
    """Keep each language's utterances in the proportions ``ratios[lang] / max(ratios)``.

    Parameters
    ----------
    rows : list of dict
    ratios : dict
        Language -> relative amount (languages not named are dropped).
    seed : int
    min_utterances : int
        Floor per language, so a tail language is present at all.

    Returns
    -------
    rows : list of dict
        The kept rows, in manifest order.
    record : dict
        Language -> ``{"utterances", "seconds"}`` kept.
    """
    if not ratios or min(ratios.values()) <= 0:
        raise ValueError(f"ratios must be positive per language, got {ratios}")
    top = max(ratios.values())
    by_lang = collections.defaultdict(list)
    for index, row in enumerate(rows):
        by_lang[row["lang"]].append(index)
    missing = sorted(set(ratios) - set(by_lang))
    if missing:
        raise ValueError(f"languages {missing} have no utterance in the manifest (it has {sorted(by_lang)})")
    keep = []
    for lang, share in ratios.items():
        indices = by_lang[lang]
        count = min(len(indices), max(min_utterances, round(len(indices) * share / top)))
        keep += _rng(seed, lang).choice(indices, size=count, replace=False).tolist()
    kept = [rows[i] for i in sorted(keep)]
    record = {lang: {"utterances": sum(r["lang"] == lang for r in kept),
                     "seconds": round(sum(float(r["duration"]) for r in kept if r["lang"] == lang), 2)}
              for lang in ratios}
    return kept, record
