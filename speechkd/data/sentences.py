"""Real sentences for the ``sentences`` task, taken from Debian's fortune cookie packages.

The packages put plain-text cookie files (entries separated by ``%`` lines)
under ``/usr/share/games/fortunes``: English at the top level, the other
languages in ``<lang>/`` sub-folders, offensive ones in ``off/`` folders
(never read here). Each entry loses its attribution line (``-- Author``), is
split into sentences, and every sentence is normalized for ASR with
:func:`speechkd.text.normalize`; sentences whose normalized form has
characters outside the language's :func:`speechkd.text.alphabet`, or fewer
than 3 or more than 20 words, are dropped.

Sentences are split into disjoint text pools by a stable hash of the
normalized sentence, so test and dev texts never occur in training:
10 % test, 10 % dev, 20 % unlabelled, 60 % train.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

FORTUNES_ROOT = Path("/usr/share/games/fortunes")

SENTENCE_LANGUAGES = ("en", "de", "es", "it", "ru", "cs", "pl", "eo", "bg")
"""Languages of the ``sentences`` task."""

FORTUNE_PACKAGES = {
    "en": "fortunes", "de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it",
    "ru": "fortunes-ru", "cs": "fortunes-cs", "pl": "fortunes-pl", "eo": "fortunes-eo",
    "bg": "fortunes-bg",
}
"""Debian package holding each language's cookie files."""

ENGLISH_FILES = (
    "fortunes", "literature", "riddles", "computers", "cookie", "definitions", "education",
    "food", "humorists", "kids", "law", "love", "magic", "medicine", "men-women",
    "miscellaneous", "news", "people", "pets", "platitudes", "politics", "pratchett",
    "science", "songs-poems", "sports", "wisdom", "work",
)
"""Top-level (English) cookie files read; the others are ASCII art, code or Italian links."""

SKIPPED_NAMES = {"off", "asciiart", "art", "ascii-art", "banner"}

MIN_WORDS = 3
MAX_WORDS = 20

POOL_SHARES = (("test", 10), ("dev", 10), ("unlabelled", 20), ("train", 60))
"""Text pool of each split, with its share of the sentences in percent."""

_SENTENCE_END = re.compile(r"(?<=[.!?…;])\s+")
_CODE_LIKE = re.compile(r"[<>|/\\_=*#@~^{}\[\]$%&+]")
_LONG_NUMBER = re.compile(r"\d{7,}|\d[.,:]\d")


def install_command(languages=SENTENCE_LANGUAGES) -> str:
    """The apt-get command installing the cookie packages of ``languages``."""
    return "apt-get install -y " + " ".join(FORTUNE_PACKAGES[lang] for lang in languages)


def fortune_files(lang: str, root: Path = FORTUNES_ROOT) -> list[Path]:
    """The cookie files of ``lang``, sorted; raises if the package is not installed."""
    if lang not in FORTUNE_PACKAGES:
        raise ValueError(f"sentences task has no language {lang!r}; "
                         f"known: {', '.join(SENTENCE_LANGUAGES)}")
    if lang == "en":
        files = [root / name for name in ENGLISH_FILES if (root / name).is_file()]
    else:
        folder = root / lang
        files = sorted(
            path for path in folder.rglob("*")
            if path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8")
            and not SKIPPED_NAMES.intersection(path.relative_to(folder).parts)
        ) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no fortune cookie files for language {lang!r} under {root}; install them with: "
            f"{install_command()}")
    return files


def raw_sentences(path: Path) -> list[str]:
    """Sentences of one cookie file, attribution lines removed, whitespace squeezed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    sentences = []
    for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [line for line in entry.splitlines()
                 if not line.strip().startswith(("--", "—", "―"))]
        joined = " ".join(" ".join(lines).split())
        sentences.extend(part for part in _SENTENCE_END.split(joined) if part)
    return sentences


def clean_sentence(sentence: str, lang: str) -> str | None:
    """Normalized sentence, or None when it is unfit for the corpus.

    Unfit: looks like code or markup, has a number longer than six digits or
    with a decimal/time separator, has a character outside the alphabet
    after normalization, or has fewer than 3 or more than 20 words.
    """
    from speechkd.text import alphabet, normalize

    if _CODE_LIKE.search(sentence) or _LONG_NUMBER.search(sentence) or "\ufffd" in sentence:
        return None
    if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS + 2:
        return None
    words = normalize(sentence, lang)
    if not MIN_WORDS <= len(words.split()) <= MAX_WORDS:
        return None
    if not set(words) <= alphabet(lang):
        return None
    return words


def pool_of(sentence: str) -> str:
    """Split whose text pool ``sentence`` belongs to (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.sha256(sentence.encode("utf-8")).digest()[:4], "big") % 100
    for split, share in POOL_SHARES:
        if bucket < share:
            return split
        bucket -= share
    raise AssertionError("POOL_SHARES must add up to 100")


@cache
def sentence_pools(lang: str, root: str = str(FORTUNES_ROOT)) -> dict[str, tuple[str, ...]]:
    """All usable sentences of ``lang``, deduplicated and sorted, per split pool.

    Returns
    -------
    dict
        ``{"train": (...), "dev": (...), "test": (...), "unlabelled": (...)}``.
    """
    unique = set()
    for path in fortune_files(lang, Path(root)):
        for sentence in raw_sentences(path):
            words = clean_sentence(sentence, lang)
            if words:
                unique.add(words)
    pools: dict[str, list[str]] = {split: [] for split, _ in POOL_SHARES}
    for words in sorted(unique):
        pools[pool_of(words)].append(words)
    empty = [split for split, texts in pools.items() if not texts]
    if empty:
        raise ValueError(f"language {lang!r} has no usable sentences for {empty} under {root}")
    return {split: tuple(texts) for split, texts in pools.items()}
