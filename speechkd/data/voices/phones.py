"""Cross-lingual phone mapping: another language's words as festival English phones.

A recorded English diphone voice (festival's ``kal``, ``ked``) can speak a
language it was not recorded for when each word is given as a sequence of its
own phones: espeak-ng transcribes the word in the target language (IPA, one
word at a time, so word boundaries survive), :data:`PHONE_MAPS` turns each
IPA phoneme into the nearest phones of festival's ``radio`` phone set (the
set of the CMU lexicon the English voices use), the phones are split into
syllables with espeak-ng's stress as lexical stress, and festival
speaks them with the voice's own duration and intonation models (a lexicon
entry per word, see :mod:`speechkd.data.voices.festival`). This is
cross-lingual synthesis by phone mapping, as used for languages without a
voice of their own: the result sounds like an American speaker reading the
language, a speaker and accent espeak-ng's formant voices never give.

Example
-------
>>> from speechkd.data.voices.espeak import EspeakSynthesizer
>>> lexicon_entries("veintitrés", "es", EspeakSynthesizer())      # doctest: +SKIP
('veintitres', [('veintitres', [(['b', 'ey', 'n'], 0), (['t', 'iy'], 0),
                                (['t', 'r', 'ey', 's'], 1)])])
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

PRIMARY, SECONDARY = "ˈ", "ˌ"
MARKS = re.compile(r"\([a-z-]+\)|[ˌː0-9]")
"""What :func:`map_phonemes` drops from espeak-ng's phonemes besides primary stress:
language-switch marks (``(en)``), secondary stress, length and espeak-ng's digits
(``1`` between the parts of German compounds)."""

_SHARED = {
    # consonants with the same or nearest English phone in every language below
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g", "ɡ": "g",
    "f": "f", "v": "v", "s": "s", "z": "z", "ʃ": "sh", "ʒ": "zh", "h": "hh",
    "m": "m", "n": "n", "ŋ": "ng", "l": "l", "j": "y", "w": "w",
    "tʃ": "ch", "dʒ": "jh", "ts": "t s", "ɲ": "n y",
}

_ENGLISH_WORDS = {
    # espeak-ng reads English words inside other languages' text ("security", "the")
    # with English phonemes between language-switch marks
    "ɹ": "r", "æ": "ae", "ɒ": "aa", "ʌ": "ah", "ɜ": "er", "ɚ": "axr", "ᵻ": "ih",
    "eɪ": "ey", "ɛɪ": "ey", "aɪ": "ay", "ɔɪ": "oy", "aʊ": "aw", "əʊ": "ow", "oʊ": "ow",
    "eə": "eh r", "iə": "iy ax", "ʊə": "uh r", "aɪə": "ay ax", "aʊə": "aw ax", "əl": "ax l",
    "ð": "dh", "θ": "th", "ɾ": "dx", "ʔ": "",
}

PHONE_MAPS = {
    "es": _SHARED | _ENGLISH_WORDS | {
        # vowels: Spanish has five, each nearest a tense English vowel; espeak-ng writes
        # stressed e in closed syllables as ɛ (American readers say "eh" there)
        "a": "aa", "e": "ey", "ɛ": "eh", "i": "iy", "o": "ow", "u": "uw",
        "eɪ": "ey", "aɪ": "ay", "oɪ": "oy", "aʊ": "aw", "eʊ": "ey w",
        # tap and trill both as English r; spirant allophones as the stops' English
        # neighbours; x (jota) as h; θ (Castilian z/c) as th; palatals as y
        "ɾ": "r", "r": "r", "β": "b", "ð": "dh", "ɣ": "g", "x": "hh", "θ": "th",
        "ʎ": "y", "ʝ": "y", "ʒ": "zh",
    },
    "de": _SHARED | _ENGLISH_WORDS | {
        # tense (long) and lax (short) vowels to English tense and lax ones; front
        # rounded vowels, which English lacks, as an American reads them (ü as oo, ö as er)
        "a": "aa", "ɑ": "aa", "e": "ey", "ɛ": "eh", "i": "iy", "ɪ": "ih", "o": "ow",
        "ɔ": "ao", "u": "uw", "ʊ": "uh", "y": "uw", "ʏ": "uh", "ø": "er", "œ": "er",
        "ə": "ax", "ɐ": "axr", "ɜ": "er", "aɪ": "ay", "aʊ": "aw", "ɔø": "oy", "ɔʏ": "oy",
        # ich-Laut as sh, ach-Laut as h, uvular r as r, affricates as their two phones,
        # syllabic l and n with a schwa, glottal stop dropped (festival pauses on its own)
        "ç": "sh", "x": "hh", "ʁ": "r", "r": "r", "ɾ": "r", "pf": "p f", "ʔ": "",
        "l̩": "ax l", "n̩": "ax n", "ʊɐ": "uh axr", "ɑ̃": "aa n", "ɔ̃": "ow n", "ɛ̃": "ae n",
    },
    "fr": _SHARED | _ENGLISH_WORDS | {
        "a": "aa", "ɑ": "aa", "e": "ey", "ɛ": "eh", "i": "iy", "o": "ow", "ɔ": "ao",
        "u": "uw", "y": "uw", "ø": "er", "œ": "er", "ə": "ax", "ə-": "ax",
        # nasal vowels as vowel + n, as an American reads "vingt", "cent", "onze"
        "ɑ̃": "aa n", "ɔ̃": "ow n", "ɛ̃": "ae n", "œ̃": "ah n",
        "ʁ": "r", "r": "r", "ɥ": "w", "ʔ": "",
    },
}
"""``{language: {espeak-ng IPA phoneme: festival radio phones (space-separated)}}``.

Keys are the phonemes espeak-ng emits for the language, :data:`MARKS` and
stress removed (English phones have no length; German long vowels are tense),
and the English phonemes it uses for English words in the language's text;
values are phones of festival's ``radio`` set (``""``: none), the vowel of
a value carrying the syllable's stress. The tests check that every
phoneme of the numbers task's vocabulary is mapped."""

ESPEAK_LANGUAGES = {"es": "es-419", "de": "de", "fr": "fr"}
"""espeak-ng voice that transcribes each language: Latin American Spanish (seseo:
``cero`` with s, not θ), the variety American English speakers learn and read."""

VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "eh", "er", "ey", "ih",
                    "iy", "ow", "oy", "uh", "uw"})
"""Vowels of festival's radio phone set (syllable nuclei)."""

ONSET_CLUSTERS = frozenset(f"{stop} {liquid}" for stop in ["p", "b", "t", "d", "k", "g", "f"]
                           for liquid in ["r", "l"])
"""Two-consonant onsets (obstruent + liquid) kept together when splitting syllables."""


class UnmappedPhonemeError(ValueError):
    """espeak-ng emitted a phoneme :data:`PHONE_MAPS` has no entry for."""


def map_phonemes(phonemes: list[str], lang: str, word: str = "") -> list[tuple[str, int]]:
    """Festival phones of one word's espeak-ng phonemes, with their stress.

    Parameters
    ----------
    phonemes : list of str
        IPA phonemes as espeak-ng writes them, stress marks before the phoneme
        they fall on (``["t", "ɾ", "ˈe", "s"]``).
    lang : str
        A key of :data:`PHONE_MAPS`.
    word : str
        The word they spell (for the error message).

    Returns
    -------
    list of (str, int)
        ``(phone, stress)``: stress 1 on the vowel after a primary stress mark
        (secondary where the word has no primary), else 0.

    Raises
    ------
    UnmappedPhonemeError
        Naming the phoneme, the word and the language.
    """
    if lang not in PHONE_MAPS:
        raise ValueError(f"no phone map for language {lang!r}; mapped: {', '.join(PHONE_MAPS)}")
    table = PHONE_MAPS[lang]
    phones: list[tuple[str, int]] = []
    # a word espeak-ng gives only secondary stress (German "bekam") stresses that syllable
    mark = PRIMARY if any(PRIMARY in phoneme for phoneme in phonemes) else SECONDARY
    stress = 0
    for phoneme in phonemes:
        stress = max(stress, int(mark in phoneme))
        symbol = MARKS.sub("", phoneme.replace(PRIMARY, ""))  # MARKS drops SECONDARY
        if not symbol:
            continue
        if symbol not in table:
            raise UnmappedPhonemeError(
                f"espeak-ng phoneme {symbol!r} of {lang} word {word!r} has no festival phone "
                f"in PHONE_MAPS[{lang!r}] (speechkd/data/voices/phones.py)")
        for phone in table[symbol].split():
            phones.append((phone, stress if phone in VOWELS else 0))
            if phone in VOWELS:
                stress = 0
    return phones


def syllables(phones: list[tuple[str, int]]) -> list[tuple[list[str], int]]:
    """Split a word's phones into syllables, maximal legal onset first.

    Every vowel is a nucleus; of the consonants between two vowels, the
    last one goes to the next syllable, with a glide (``y``, ``w``) the
    consonant before it too, and an obstruent before ``r``/``l``
    (:data:`ONSET_CLUSTERS`); the rest close the syllable before.

    Parameters
    ----------
    phones : list of (str, int)
        As returned by :func:`map_phonemes`.

    Returns
    -------
    list of (list of str, int)
        ``(phones, stress)`` per syllable, festival's lexicon format.
    """
    nuclei = [i for i, (phone, _) in enumerate(phones) if phone in VOWELS]
    if not nuclei:
        return [([phone for phone, _ in phones], 0)] if phones else []
    starts = [0]
    for previous, vowel in pairwise(nuclei):
        start = vowel
        if start - 1 > previous and phones[start - 1][0] in ("y", "w"):
            start -= 1
        if start - 1 > previous:
            start -= 1
            if start - 1 > previous and \
                    f"{phones[start - 1][0]} {phones[start][0]}" in ONSET_CLUSTERS:
                start -= 1
        starts.append(start)
    ends = starts[1:] + [len(phones)]
    return [([phone for phone, _ in phones[start:end]], phones[nucleus][1])
            for start, end, nucleus in zip(starts, ends, nuclei)]


def word_key(word: str, taken: dict) -> str:
    """An ASCII lower-case key for ``word`` that festival's English tokeniser keeps whole.

    ``taken`` maps keys already used in the utterance to their words; a key
    another word took gets ``q`` appended until it is free.
    """
    key = "".join(char for char in unicodedata.normalize("NFKD", word.lower())
                  if "a" <= char <= "z") or "q"
    while taken.get(key, word) != word:
        key += "q"
    taken[key] = word
    return key


def lexicon_entries(text: str, lang: str, espeak) -> tuple[str, list]:
    """Festival lexicon entries that make an English voice speak ``text`` in ``lang``.

    Parameters
    ----------
    text : str
        Words of ``lang``; case, punctuation and digits are dropped.
    lang : str
        A key of :data:`PHONE_MAPS`.
    espeak : speechkd.data.voices.espeak.EspeakSynthesizer
        Transcribes the words (:meth:`~EspeakSynthesizer.phonemes`).

    Returns
    -------
    str
        The text with every word replaced by its ASCII key (:func:`word_key`).
    list of (str, list)
        ``(key, syllables)`` per distinct word, syllables as :func:`syllables`.
    """
    words = re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)*", text.lower())
    if not words:
        raise ValueError(f"no words to speak in {text!r} ({lang})")
    taken: dict = {}
    keys = [word_key(word, taken) for word in words]
    transcriptions = espeak.phonemes(words, ESPEAK_LANGUAGES[lang])
    entries = {key: syllables(map_phonemes(phonemes, lang, word))
               for key, word, phonemes in zip(keys, words, transcriptions)}
    return " ".join(keys), list(entries.items())
