"""Spoken-number prompts for the ``numbers`` task: cardinals, digit strings and dates.

Every prompt is written out in words by num2words and cleaned to the
transcript form (lower case, no punctuation, single spaces); the same words
are what espeak-ng speaks, so audio and transcript match exactly.

One fixed form per language:

====  ================================================================
en    ``twenty three`` / ``two one zero`` / ``the first of may two thousand three``
de    ``dreiundzwanzig`` / ``zwei eins null`` / ``der erste mai zweitausenddrei``
es    ``veintitrés`` / ``dos uno cero`` / ``el uno de mayo de dos mil tres``
it    ``ventitré`` / ``due uno zero`` / ``uno maggio duemilatré``
fr    ``vingt trois`` / ``deux un zéro`` / ``le premier mai deux mille trois``
ru    ``двадцать три`` / ``два один ноль`` / ``первое мая две тысячи третьего года``
uk    ``двадцять три`` / ``два один нуль`` / ``перше травня дві тисячі третього року``
====  ================================================================
"""

from __future__ import annotations

import re

import numpy as np

NUMBER_LANGUAGES = ("en", "de", "es", "it", "fr", "ru", "uk")
"""Languages of the ``numbers`` task (uk: the low-resource relative of ru)."""

MONTHS = {
    "en": "january february march april may june july august september october november "
          "december",
    "de": "januar februar märz april mai juni juli august september oktober november dezember",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre "
          "diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
          "dicembre",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "ru": "января февраля марта апреля мая июня июля августа сентября октября ноября декабря",
    "uk": "січня лютого березня квітня травня червня липня серпня вересня жовтня листопада "
          "грудня",
}
"""Month names per language (genitive for ru and uk, as used in dates)."""

PROMPT_KINDS = ("small_cardinal", "large_cardinal", "digits", "date")
PROMPT_WEIGHTS = (0.3, 0.25, 0.25, 0.2)


def clean_words(text: str) -> str:
    """Lower-case ``text``, turn every non-letter (except ') into a space, squeeze spaces.

    >>> clean_words("One thousand, nine hundred and eighty-four")
    'one thousand nine hundred and eighty four'
    """
    text = re.sub(r"[^\w']|[\d_]", " ", text.lower())
    return " ".join(text.split())


def spell(number: int, lang: str, **kwargs) -> str:
    """num2words ``number`` in ``lang``, cleaned with :func:`clean_words`."""
    from num2words import num2words

    return clean_words(num2words(number, lang=lang, **kwargs))


def digit_string(digits: list[int], lang: str) -> str:
    """Digits spoken one by one, e.g. ``[2, 1, 0]`` -> ``"two one zero"``."""
    return " ".join(spell(digit, lang) for digit in digits)


def _uk_ordinal_neuter(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = re.sub("ій$", "є", re.sub("ий$", "е", last))
    return f"{head} {last}".strip()


def _uk_ordinal_genitive(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = re.sub("ій$", "ього", re.sub("ий$", "ого", last))
    return f"{head} {last}".strip()


def date_words(day: int, month: int, year: int, lang: str) -> str:
    """A date written out in the fixed form of ``lang`` (see the module table)."""
    month_name = MONTHS[lang].split()[month - 1]
    if lang == "en":
        return f"the {spell(day, lang, to='ordinal')} of {month_name} " \
               f"{spell(year, lang, to='year').replace(' and ', ' ')}"
    if lang == "de":
        return f"der {spell(day, lang, to='ordinal')} {month_name} {spell(year, lang, to='year')}"
    if lang == "es":
        return f"el {spell(day, lang)} de {month_name} de {spell(year, lang)}"
    if lang == "it":
        return f"{spell(day, lang)} {month_name} {spell(year, lang)}"
    if lang == "fr":
        day_words = "premier" if day == 1 else spell(day, lang)
        return f"le {day_words} {month_name} {spell(year, lang)}"
    if lang == "ru":
        return f"{spell(day, lang, to='ordinal', gender='n')} {month_name} " \
               f"{spell(year, lang, to='ordinal', case='g')} года"
    if lang == "uk":
        year_words = _uk_ordinal_genitive(spell(year, lang, to="ordinal"))
        year_words = re.sub("^одна ", "", year_words)
        return f"{_uk_ordinal_neuter(spell(day, lang, to='ordinal'))} {month_name} " \
               f"{year_words} року"
    raise ValueError(f"numbers task has no date form for language {lang!r}; "
                     f"known: {', '.join(NUMBER_LANGUAGES)}")


def number_prompt(lang: str, rng: np.random.Generator) -> str:
    """Draw one spoken-number prompt for ``lang``.

    Parameters
    ----------
    lang : str
        One of :data:`NUMBER_LANGUAGES`.
    rng : np.random.Generator
        Source of randomness (the caller seeds it per utterance).

    Returns
    -------
    str
        Transcript = text to speak, e.g. ``"zwei eins null"``. Cardinals
        start at 10 so that no utterance is a single short word.
    """
    if lang not in NUMBER_LANGUAGES:
        raise ValueError(f"numbers task has no language {lang!r}; "
                         f"known: {', '.join(NUMBER_LANGUAGES)}")
    kind = PROMPT_KINDS[rng.choice(len(PROMPT_KINDS), p=PROMPT_WEIGHTS)]
    if kind == "small_cardinal":
        return spell(int(rng.integers(10, 1000)), lang)
    if kind == "large_cardinal":
        return spell(int(rng.integers(1000, 10000)), lang)
    if kind == "digits":
        return digit_string([int(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 7)))],
                            lang)
    return date_words(int(rng.integers(1, 29)), int(rng.integers(1, 13)),
                      int(rng.integers(1950, 2031)), lang)
