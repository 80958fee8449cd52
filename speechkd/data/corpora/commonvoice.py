"""Common Voice, any release: ``<lang>/{train,dev,test,validated}.tsv`` and ``<lang>/clips/*.mp3``.

The TSVs are read by header name, so the column changes between releases
(``accent`` -> ``accents``, ``sentence_id``/``sentence_domain``/``variant``
added, ``locale`` and ``segment`` present or not) do not matter: only
``client_id``, ``path`` and ``sentence`` are needed. Written by hand, not
with lhotse's ``prepare_commonvoice``: that one reads ``gender``,
``accents`` and ``variant`` by name (so fails on old releases) and
has no speaker-disjoint re-split of ``validated.tsv``.

    prepare_commonvoice("/data/cv-corpus-17.0", "data/cv", languages=["uk", "ru", "pl"])
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from speechkd.data.corpora.common import (
    SPLITS,
    PreparationError,
    PreparationReport,
    SourceUtterance,
    already_prepared,
    check_language,
    file_recording,
    speaker_disjoint_split,
    write_prepared_corpus,
)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("client_id", "path", "sentence")


def prepare_commonvoice(corpus_folder, out, languages=None, use_validated=False, dev_fraction=0.1,
                        test_fraction=0.1, seed=0, target_lang=None, target_minutes=None,
                        token_min_count=1, workers=1):
    """Prepare Common Voice languages into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    corpus_folder : str
        The release folder holding one folder per language (``cv-corpus-17.0-2024-03-15/``).
    out : str
        Prepared corpus folder.
    languages : sequence of str, optional
        Language folders to pool (default: every folder with a ``clips/``).
    use_validated : bool
        Split ``validated.tsv`` by speaker (``dev_fraction``, ``test_fraction``,
        ``seed``) instead of using the release's train/dev/test TSVs.
    target_lang : str, optional
        A low-resource target among ``languages``: its train utterances
        beyond ``target_minutes`` (by source duration, in TSV order) go to
        ``unlabelled.csv`` (their transcripts kept there for analysis only).
    token_min_count, workers
        As for :func:`speechkd.data.corpora.common.write_prepared_corpus`.

    Returns
    -------
    dict
        The preparation report (``None`` when already prepared with these options).
    """
    corpus_folder = Path(corpus_folder)
    if languages is None:
        languages = sorted(p.name for p in corpus_folder.iterdir() if (p / "clips").is_dir())
    options = {"format": "commonvoice", "corpus_folder": str(corpus_folder.resolve()),
               "languages": list(languages), "use_validated": use_validated,
               "fractions": [dev_fraction, test_fraction], "seed": seed, "target": [target_lang, target_minutes],
               "token_min_count": token_min_count}
    if already_prepared(out, options):
        return None
    if not languages:
        raise PreparationError(f"{corpus_folder}: no Common Voice language folder (with clips/) found")
    report = PreparationReport(source=str(corpus_folder))
    splits = {split: [] for split in SPLITS}
    for lang_folder in (corpus_folder / lang for lang in languages):
        if use_validated:
            validated = read_tsv(lang_folder / "validated.tsv", lang_folder, report)
            for split, utts in speaker_disjoint_split(validated, dev_fraction, test_fraction, seed,
                                                      where=str(lang_folder / "validated.tsv")).items():
                splits[split] += utts
        else:
            for split in SPLITS:
                splits[split] += read_tsv(lang_folder / f"{split}.tsv", lang_folder, report)
    if target_lang is not None:
        splits["train"], splits["unlabelled"] = split_target(splits["train"], target_lang, target_minutes)
    return write_prepared_corpus(splits, out, report, options, token_min_count, workers)


def read_tsv(tsv, lang_folder, report):
    """The utterances of one Common Voice TSV (columns found by header name).

    Raises
    ------
    PreparationError
        The file is missing, or its header lacks a needed column (naming the file and the header).
    """
    if not tsv.is_file():
        raise PreparationError(f"{tsv}: no such file (a Common Voice language folder has "
                               "train.tsv, dev.tsv, test.tsv and validated.tsv)")
    with open(tsv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PreparationError(f"{tsv}:1: header lacks {', '.join(missing)} "
                                   f"(got {', '.join(header)}); is this a Common Voice TSV?")
        utterances = []
        for row in reader:
            where = f"{tsv}:{reader.line_num}"
            lang = check_language((row.get("locale") or lang_folder.name).split("-")[0], where)
            recording = file_recording(lang_folder / "clips" / row["path"], Path(row["path"]).stem,
                                       report, where)
            if recording is not None:
                utterances.append(SourceUtterance(f"{lang}-{Path(row['path']).stem}", recording, 0.0, None,
                                                  row["client_id"], lang, row["sentence"] or "", where))
    return utterances


def split_target(train, target_lang, target_minutes):
    """``(labelled train, unlabelled)``: the target's first ``target_minutes`` stay labelled."""
    labelled, unlabelled, seconds = [], [], 0.0
    for utt in train:
        if utt.lang != target_lang:
            labelled.append(utt)
        elif target_minutes is None or seconds < 60 * target_minutes:
            labelled.append(utt)
            seconds += utt.recording.duration
        else:
            unlabelled.append(utt)
    return labelled, unlabelled
