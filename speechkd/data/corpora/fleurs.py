"""FLEURS: ``<lang>_<region>/<split>.tsv`` (no header) and ``<lang>_<region>/audio/<split>/<file>.wav``.

The TSV columns are ``id, file_name, raw_transcription, transcription,
phonemes, num_samples, gender``; ``id`` is the sentence, read by several
speakers, so the utterance ID is the audio file's name. FLEURS names no
speakers: each recording is its own ``spk_id``. The raw transcription
(case, punctuation, digits) goes through speechkd's normalization.
Written by hand: lhotse's ``prepare_fleurs`` reads the layout its own
downloader writes (``metadata/<lang>/``), not the released archives.

    prepare_fleurs("/data/fleurs", "data/fleurs", languages=["pl_pl", "uk_ua"])
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

COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "phonemes", "num_samples", "gender")


def prepare_fleurs(corpus_folder, out, languages=None, token_min_count=1, workers=1):
    """Prepare FLEURS languages into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    corpus_folder : str
        Folder holding ``pl_pl/``, ``uk_ua/``, ...
    out : str
    languages : sequence of str, optional
        FLEURS folder names; default every folder with a ``train.tsv``.
    token_min_count, workers
        As for :func:`speechkd.data.corpora.common.write_prepared_corpus`.
    """
    corpus_folder = Path(corpus_folder)
    if languages is None:
        languages = sorted(p.parent.name for p in corpus_folder.glob("*/train.tsv"))
    if not languages:
        raise PreparationError(f"{corpus_folder}: no FLEURS language folder (<lang>_<region>/train.tsv)")
    options = {"format": "fleurs", "corpus_folder": str(corpus_folder.resolve()),
               "languages": list(languages), "token_min_count": token_min_count}
    if already_prepared(out, options):
        return None
    report = PreparationReport(source=str(corpus_folder))
    splits = {split: [u for name in languages for u in read_tsv(corpus_folder / name, split, report)]
              for split in SPLITS}
    return write_prepared_corpus(splits, out, report, options, token_min_count, workers)


def read_tsv(folder, split, report):
    """Utterances of ``<folder>/<split>.tsv``."""
    tsv = folder / f"{split}.tsv"
    if not tsv.is_file():
        raise PreparationError(f"{tsv}: no such file")
    lang = check_language(folder.name.split("_")[0], str(tsv))
    utterances = []
    for line_number, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{tsv}:{line_number}"
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise PreparationError(f"{where}: {len(fields)} tab-separated fields, a FLEURS TSV has "
                                   f"{len(COLUMNS)} ({', '.join(COLUMNS)})")
        row = dict(zip(COLUMNS, fields))
        stem = Path(row["file_name"]).stem
        recording = file_recording(folder / "audio" / split / row["file_name"], stem, report, where)
        if recording is not None:
            utt_id = f"{folder.name}-{stem}"
            utterances.append(SourceUtterance(utt_id, recording, 0.0, None, utt_id, lang,
                                              row["raw_transcription"], where))
    return utterances
