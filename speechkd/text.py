"""Text normalization and the multilingual character token inventory.

Every transcript goes through :func:`normalize` before it reaches a model:
lower case, punctuation removed, digits written out as words in the
utterance's language, single spaces. The :class:`TokenInventory` maps the
resulting characters to integer ids, with the CTC blank at index 0.

Example
-------
>>> normalize("Call me at 9, please!", "en")
'call me at nine please'
>>> inv, _ = TokenInventory.from_training_texts(["ab ba"])
>>> inv.symbols
['<blank>', ' ', 'a', 'b']
>>> inv.encode("ab a")
[2, 3, 1, 2]
>>> inv.decode([2, 3, 1, 2])
'ab a'
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from num2words import num2words

BLANK = "<blank>"
SPACE = "<space>"
UNK = "<unk>"
"""Stands for every character the inventory does not hold (rare in training, or unseen)."""

_LATIN = "abcdefghijklmnopqrstuvwxyz"
_RU = "абвгдежзийклмнопрстуфхцчшщъыьэюяё"
_ALPHABETS = {
    "en": _LATIN + "'",
    "de": _LATIN + "äöüß",
    "es": _LATIN + "áéíóúüñ",
    "it": _LATIN + "àèéìíîòóùú'",
    "fr": _LATIN + "àâæçéèêëîïôœùûüÿ'",
    "ru": _RU,
    "uk": "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя'",
    "cs": _LATIN + "áčďéěíňóřšťúůýž",
    "pl": _LATIN + "ąćęłńóśźż",
    "eo": "abcdefghijklmnoprstuvzĉĝĥĵŝŭ",
    "bg": "абвгдежзийклмнопрстуфхцчшщъьюя",
    "nl": _LATIN + "áéëïóöü'",
    "pt": _LATIN + "áàâãçéêíóôõú",
}
LANGUAGES = tuple(sorted(_ALPHABETS))

_APOSTROPHES = "’‘`´ʼ"
_DIGITS = re.compile(r"\d+")


def _check_lang(lang: str) -> None:
    if lang not in _ALPHABETS:
        raise ValueError(f"unsupported language {lang!r}; supported: {', '.join(LANGUAGES)}")


def alphabet(lang: str) -> set[str]:
    """Letters a normalized transcript of ``lang`` may contain, plus ``" "``.

    Parameters
    ----------
    lang : str
        ISO 639-1 code, one of :data:`LANGUAGES`.

    Returns
    -------
    set of str
        Single characters. The apostrophe belongs to en, fr, it and uk
        (``don't``, ``l'homme``, ``п'ять``).
    """
    _check_lang(lang)
    return set(_ALPHABETS[lang]) | {" "}


# Bulgarian is not covered by num2words; a compact speller for 0 .. 999 999 999.
_BG_UNITS = ["нула", "едно", "две", "три", "четири", "пет", "шест", "седем", "осем", "девет"]
_BG_TEENS = ["десет", "единадесет", "дванадесет", "тринадесет", "четиринадесет",
             "петнадесет", "шестнадесет", "седемнадесет", "осемнадесет", "деветнадесет"]
_BG_TENS = ["", "", "двадесет", "тридесет", "четиридесет", "петдесет", "шестдесет",
            "седемдесет", "осемдесет", "деветдесет"]
_BG_HUNDREDS = ["", "сто", "двеста", "триста", "четиристотин", "петстотин", "шестстотин",
                "седемстотин", "осемстотин", "деветстотин"]


def _bg_below_thousand(n: int) -> list[str]:
    words = []
    if n >= 100:
        words.append(_BG_HUNDREDS[n // 100])
    rest = n % 100
    if 10 <= rest < 20:
        words.append(_BG_TEENS[rest - 10])
    else:
        if rest >= 20:
            words.append(_BG_TENS[rest // 10])
        if rest % 10:
            words.append(_BG_UNITS[rest % 10])
    return words


def _bulgarian_number(n: int) -> str:
    if n == 0:
        return _BG_UNITS[0]
    if n >= 10**9:
        return " ".join(_BG_UNITS[int(d)] for d in str(n))
    millions, thousands, units = n // 10**6, (n // 1000) % 1000, n % 1000
    words: list[str] = []
    if millions:
        words += ["един", "милион"] if millions == 1 else _bg_below_thousand(millions) + ["милиона"]
    if thousands:
        words += ["хиляда"] if thousands == 1 else _bg_below_thousand(thousands) + ["хиляди"]
    words += _bg_below_thousand(units)
    if len(words) > 1:  # "и" joins the last element: двадесет и едно, хиляда и пет
        words.insert(len(words) - 1, "и")
    return " ".join(words)


def number_to_words(number: int, lang: str) -> str:
    """Spell a non-negative integer in ``lang`` (num2words; built-in speller for bg)."""
    _check_lang(lang)
    if lang == "bg":
        return _bulgarian_number(number)
    return num2words(number, lang=lang)


def normalize(text: str, lang: str, changes: collections.Counter | None = None) -> str:
    """Normalize a transcript for character-level ASR.

    Unicode NFC, lower case, digit runs written out with
    :func:`number_to_words` in ``lang``, punctuation and symbols replaced by
    spaces, whitespace collapsed. Apostrophes inside words are kept for
    languages whose :func:`alphabet` has one and dropped (joining the word)
    elsewhere; hyphens become spaces (``twenty-one`` -> ``twenty one``).

    Parameters
    ----------
    text : str
        Raw transcript.
    lang : str
        Language code, one of :data:`LANGUAGES`.
    changes : collections.Counter, optional
        Receives what was changed, per kind: ``numbers written out``,
        ``upper case lowered``, ``punctuation removed: <char>``,
        ``apostrophe dropped``, ``letter outside the <lang> alphabet: <char>``
        (kept: the token inventory decides), for a preparation report.

    Returns
    -------
    str
        The normalized transcript, possibly empty.
    """
    _check_lang(lang)
    text = unicodedata.normalize("NFC", text)
    count = changes if changes is not None else collections.Counter()
    numbers = _DIGITS.findall(text)
    if numbers:
        count["numbers written out"] += len(numbers)
        text = _DIGITS.sub(lambda m: f" {number_to_words(int(m.group()), lang)} ", text)
    lowered = text.lower()
    if lowered != text:
        count["upper case lowered"] += 1
    text = lowered
    for mark in _APOSTROPHES:
        text = text.replace(mark, "'")
    keep_apostrophe = "'" in _ALPHABETS[lang]
    letters = _ALPHABETS[lang]
    out = []
    for i, char in enumerate(text):
        if char == "'":
            inside_word = 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()
            if not (inside_word and keep_apostrophe):
                count["apostrophe dropped"] += 1
            out.append("'" if inside_word and keep_apostrophe else ("" if inside_word else " "))
        elif unicodedata.category(char)[0] in "PSZC":
            if not char.isspace():
                count[f"punctuation removed: {char}"] += 1
            out.append(" ")
        else:
            if char not in letters:
                count[f"letter outside the {lang} alphabet: {char}"] += 1
            out.append(char)
    return " ".join("".join(out).split())


def _symbol_to_line(symbol: str) -> str:
    return SPACE if symbol == " " else symbol


def _line_to_symbol(line: str) -> str:
    return " " if line == SPACE else line


class TokenInventory:
    """Character inventory for CTC: ``"<blank>"`` at index 0, then characters.

    Parameters
    ----------
    symbols : sequence of str
        All symbols, ``symbols[0]`` must be ``"<blank>"``; the space is the
        character ``" "`` (written ``"<space>"`` in files). ``"<unk>"`` may
        be one of them: :meth:`encode` then maps every character the
        inventory lacks to it instead of refusing the text.
    """

    blank_index = 0

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if not symbols or symbols[0] != BLANK:
            raise ValueError(f"the first symbol must be {BLANK!r}, got {symbols[:1]!r}")
        if len(set(symbols)) != len(symbols):
            dupes = sorted({s for s in symbols if symbols.count(s) > 1})
            raise ValueError(f"duplicate symbols in inventory: {dupes!r}")
        for symbol in symbols[1:]:
            if len(symbol) != 1 and symbol != UNK:
                raise ValueError(f"inventory symbols must be single characters, got {symbol!r}")
        self.symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self.unk_index = self._index.get(UNK)

    @classmethod
    def from_training_texts(cls, texts: Iterable[str], min_count: int = 1,
                            other_texts: Iterable[str] = ()) -> tuple[TokenInventory, dict]:
        """Inventory of the training transcripts' characters seen at least ``min_count`` times.

        ``"<unk>"`` is added (last) when a training character is rarer than
        ``min_count`` or ``other_texts`` (dev and test transcripts) hold a
        character training lacks; those texts never add a symbol.

        Parameters
        ----------
        texts : iterable of str
            Normalized training transcripts.
        min_count : int
            Occurrences a character needs in training to get its own symbol.
        other_texts : iterable of str
            Normalized evaluation transcripts, only counted.

        Returns
        -------
        inventory : TokenInventory
        report : dict
            ``rare``: ``{char: training count}`` of the characters left to
            ``<unk>``; ``unseen``: ``{char: count in other_texts}`` of those
            training lacks.
        """
        counts = collections.Counter()
        for text in texts:
            counts.update(text)
        kept = {char for char, n in counts.items() if n >= min_count} | {" "}
        other = collections.Counter()
        for text in other_texts:
            other.update(text)
        report = {"rare": {c: n for c, n in sorted(counts.items()) if c not in kept},
                  "unseen": {c: n for c, n in sorted(other.items()) if c not in counts}}
        unk = [UNK] if report["rare"] or any(c not in kept for c in other) else []
        return cls([BLANK] + sorted(kept) + unk), report

    @classmethod
    def from_languages(cls, langs: Iterable[str]) -> TokenInventory:
        """Inventory covering the union of :func:`alphabet` of ``langs`` (sorted)."""
        chars: set[str] = set()
        for lang in langs:
            chars |= alphabet(lang)
        return cls([BLANK] + sorted(chars))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenInventory:
        """Read an inventory file: one symbol per line, line number = index."""
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        try:
            return cls([_line_to_symbol(line) for line in lines])
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write one symbol per line (``" "`` as ``"<space>"``).

        Written to a temporary name and renamed: another torchrun rank that
        finds the file reads all of it.
        """
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self._file_text(), encoding="utf-8")
        os.replace(tmp, path)

    def _file_text(self) -> str:
        return "".join(_symbol_to_line(s) + "\n" for s in self.symbols)

    @property
    def fingerprint(self) -> str:
        """First 16 hex chars of the sha256 of the saved file's text."""
        return hashlib.sha256(self._file_text().encode("utf-8")).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return _line_to_symbol(symbol) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenInventory) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"TokenInventory({len(self)} symbols, fingerprint={self.fingerprint})"

    def index(self, symbol: str) -> int:
        """Index of ``symbol`` (``"<space>"`` and ``" "`` both name the space)."""
        try:
            return self._index[_line_to_symbol(symbol)]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} not in inventory") from None

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (a character the inventory lacks is ``<unk>`` when it has one).

        Raises
        ------
        ValueError
            Naming the first character not in the inventory and the text,
            when the inventory has no ``<unk>``.
        """
        if self.unk_index is not None:
            return [self._index.get(char, self.unk_index) for char in text]
        try:
            return [self._index[char] for char in text]
        except KeyError as err:
            char = err.args[0]
            raise ValueError(
                f"character {char!r} (U+{ord(char):04X}) is not in the token inventory; "
                f"text: {text!r}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: blanks and ``<unk>`` skipped (no CTC collapsing here).

        ``<unk>`` is left out because it is no text: written literally it
        would reach transcripts, pseudo-labels and WER hypotheses, and
        :func:`normalize` would turn it into the word ``unk``.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.symbols):
                raise ValueError(f"token id {i} out of range for {len(self.symbols)} symbols")
            if i != self.blank_index and i != self.unk_index:
                out.append(self.symbols[i])
        return "".join(out)

    def missing(self, texts: Iterable[str]) -> set[str]:
        """Characters of ``texts`` that the inventory cannot encode."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return {c for c in chars if c not in self._index}

    def extend(self, symbols: Iterable[str]) -> tuple[TokenInventory, list[str]]:
        """New inventory with ``symbols`` appended (sorted) where absent.

        Returns
        -------
        inventory : TokenInventory
            Old symbols keep their indices.
        added : list of str
            The symbols actually appended, in index order.
        """
        added = sorted({_line_to_symbol(s) for s in symbols} - set(self.symbols))
        return TokenInventory(self.symbols + added), added

    def language_subset(self, lang: str) -> list[int]:
        """Indices (blank included) of the symbols that belong to ``alphabet(lang)``."""
        letters = alphabet(lang)
        return [i for i, s in enumerate(self.symbols) if i == self.blank_index or s in letters]
