"""Multilingual LibriSpeech: ``mls_<language>[_opus]/<split>/transcripts.txt`` and ``audio/<spk>/<book>/<ID>.flac|.opus``.

Written by hand: lhotse's ``prepare_mls`` needs ``metainfo.txt`` and stops
with a bare ``KeyError`` when a transcript line has no audio file; here such
a line is skipped and counted with its file and line.

    prepare_mls("/data/mls", "data/mls", languages=["polish", "german"])
"""

from __future__ import annotations

from pathlib import Path

from speechkd.data.corpora.common import (
    SPLITS,
    PreparationError,
    PreparationReport,
    SourceUtterance,
    already_prepared,
    check_language,
    file_recording,
    write_prepared_corpus,
)

MLS_LANGUAGES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es",
                 "italian": "it", "portuguese": "pt", "polish": "pl"}
"""MLS folder names -> language codes."""


def prepare_mls(corpus_folder, out, languages=None, token_min_count=1, workers=1):
    """Prepare MLS languages into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    corpus_folder : str
        Folder holding ``mls_polish/``, ``mls_german_opus/``, ...
    out : str
    languages : sequence of str, optional
        MLS language names (``polish``); default every ``mls_*`` folder.
    token_min_count, workers
        As for :func:`speechkd.data.corpora.common.write_prepared_corpus`.
    """
    corpus_folder = Path(corpus_folder)
    folders = sorted(p for p in corpus_folder.glob("mls_*") if p.is_dir() and "_lm_" not in p.name)
    if languages is not None:
        folders = [p for p in folders if p.name.split("_")[1] in languages]
    if not folders:
        raise PreparationError(f"{corpus_folder}: no mls_<language> folder found"
                               + (f" for {list(languages)}" if languages else ""))
    options = {"format": "mls", "corpus_folder": str(corpus_folder.resolve()),
               "folders": [p.name for p in folders], "token_min_count": token_min_count}
    if already_prepared(out, options):
        return None
    report = PreparationReport(source=str(corpus_folder))
    splits = {split: [u for folder in folders for u in read_split(folder, split, report)] for split in SPLITS}
    return write_prepared_corpus(splits, out, report, options, token_min_count, workers)


def read_split(folder, split, report):
    """Utterances of ``<folder>/<split>/transcripts.txt`` (``ID<TAB>text``; ID = speaker_book_n)."""
    name = folder.name.split("_")[1]
    lang = check_language(MLS_LANGUAGES.get(name, name), str(folder))
    transcripts = folder / split / "transcripts.txt"
    if not transcripts.is_file():
        raise PreparationError(f"{transcripts}: no such file")
    extension = ".opus" if folder.name.endswith("_opus") else ".flac"
    utterances = []
    for line_number, line in enumerate(transcripts.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{transcripts}:{line_number}"
        utt_id, sep, text = line.partition("\t")
        if not sep or utt_id.count("_") != 2:
            raise PreparationError(f"{where}: expected '<speaker>_<book>_<n><TAB><text>', got {line[:60]!r}")
        speaker, book, _ = utt_id.split("_")
        path = folder / split / "audio" / speaker / book / f"{utt_id}{extension}"
        recording = file_recording(path, utt_id, report, where)
        if recording is not None:
            utterances.append(SourceUtterance(f"{lang}-{utt_id}", recording, 0.0, None, speaker, lang, text, where))
    return utterances
