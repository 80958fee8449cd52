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
- :func:`long_tailed_words`: the same for words: a seeded share of each
  language's vocabulary becomes the tail, and an utterance holding a tail word
  is kept with probability ``tail_ratio``; :func:`tail_utterances` finds the
  test utterances that hold one, to report them apart.
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


def long_tailed_words(rows: list[dict], tail_share: float = 0.2, tail_ratio: float = 0.1, seed: int = 0,
                      min_count: int = 5, max_share: float = 0.1) -> tuple[list[dict], dict]:
    """Make some words rare: drop most of the utterances that hold them.

    In each language, the tail is ``round(tail_share * n)`` (at least one) of
    the ``n`` candidate words, drawn with a seeded generator. A candidate is
    in at least ``min_count`` utterances (rarer words, e.g. German's one-word
    compound numbers, are rare already) and in at most ``max_share`` of the
    language's utterances (so that the tail is not "and" or "de", whose
    utterances are most of the corpus). An utterance holding a tail
    word is kept with probability ``tail_ratio`` (so a tail word is seen about
    ``tail_ratio`` times as often as in the full manifest); the others are all
    kept. Words co-occur in an utterance, so a head word loses the dropped
    utterances it shared with a tail word; the record's ``word_counts`` give
    every word's occurrences before and after.

    Parameters
    ----------
    rows : list of dict
        Manifest rows (``ID``, ``lang``, ``wrd``, ...); not modified.
    tail_share : float
        Share of each language's vocabulary in the tail, in (0, 1).
    tail_ratio : float
        Probability of keeping an utterance that holds a tail word, in (0, 1].
    seed : int
    min_count : int
        Utterances a word must appear in to be a tail candidate.
    max_share : float
        Share of its language's utterances a tail candidate may appear in at most.

    Returns
    -------
    rows : list of dict
        The kept rows, in manifest order.
    record : dict
        ``{"tail": {lang: [words]}, "kept": {"head_utterances", "tail_utterances", "of"},
        "word_counts": {lang: {word: [occurrences before, after]}}}`` and the arguments
        (``tail_share``, ``tail_ratio``, ``min_count``, ``max_share``).
    """
    if not 0.0 < tail_share < 1.0 or not 0.0 < tail_ratio <= 1.0:
        raise ValueError(f"tail_share must be in (0, 1) and tail_ratio in (0, 1], got {tail_share}, {tail_ratio}")
    vocabulary = collections.defaultdict(collections.Counter)  # lang -> word -> utterances holding it
    for row in rows:
        vocabulary[row["lang"]].update(set(row["wrd"].split()))
    utterances = collections.Counter(row["lang"] for row in rows)
    tail = {}
    for lang, counter in sorted(vocabulary.items()):
        words = sorted(word for word, count in counter.items()
                       if min_count <= count <= max_share * utterances[lang])
        if not words:
            raise ValueError(f"no {lang} word is in {min_count} or more and at most {max_share:.0%} of its "
                             f"{utterances[lang]} utterances: lower min_count or raise max_share")
        count = max(1, round(tail_share * len(words)))
        tail[lang] = sorted(_rng(seed, "tail", lang).choice(words, size=count, replace=False).tolist())
    keep_draw = _rng(seed, "keep").random(len(rows))
    kept, head_count, tail_count = [], 0, 0
    for row, draw in zip(rows, keep_draw):
        if holds_tail_word(row, tail):
            if draw < tail_ratio:
                kept.append(row)
                tail_count += 1
        else:
            kept.append(row)
            head_count += 1
    counts = {lang: {word: [0, 0] for word in sorted(words)} for lang, words in vocabulary.items()}
    for column, subset in enumerate((rows, kept)):
        for row in subset:
            for word in row["wrd"].split():
                counts[row["lang"]][word][column] += 1
    record = {"tail": tail, "tail_share": tail_share, "tail_ratio": tail_ratio, "min_count": min_count,
              "max_share": max_share,
              "kept": {"head_utterances": head_count, "tail_utterances": tail_count,
                       "of": len(rows)}, "word_counts": counts}
    return kept, record


def holds_tail_word(row: dict, tail: dict) -> bool:
    """Whether a manifest row's transcript holds a word of its language's tail (``{lang: [words]}``)."""
    return not set(row["wrd"].split()).isdisjoint(tail.get(row["lang"], ()))


def tail_utterances(rows: list[dict], tail: dict) -> set[str]:
    """IDs of the rows (e.g. a test manifest) holding a tail word of :func:`long_tailed_words`' record."""
    return {row["ID"] for row in rows if holds_tail_word(row, tail)}
