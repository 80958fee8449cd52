"""LibriSpeech: ``<part>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` and ``*.trans.txt``.

Parsed by lhotse's ``prepare_librispeech`` (it reads the local folder, no
download). Dev and test pool their ``clean`` and ``other`` parts, the
``domain`` column telling them apart, so every report gives WER per part:

    prepare_librispeech("/data/LibriSpeech", "data/librispeech")
"""

from __future__ import annotations

import logging
from pathlib import Path

from speechkd.data.corpora.common import (
    PreparationError,
    PreparationReport,
    SourceUtterance,
    already_prepared,
    write_prepared_corpus,
)

logger = logging.getLogger(__name__)

TRAIN_PARTS = ("train-clean-100",)
DEV_PARTS = ("dev-clean", "dev-other")
TEST_PARTS = ("test-clean", "test-other")


def prepare_librispeech(corpus_folder, out, train_parts=TRAIN_PARTS, dev_parts=DEV_PARTS,
                        test_parts=TEST_PARTS, token_min_count=1, workers=1):
    """Prepare LibriSpeech parts into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    corpus_folder : str
        The folder holding ``train-clean-100/``, ``dev-clean/``, ... (``LibriSpeech/``).
    out : str
        Prepared corpus folder.
    train_parts, dev_parts, test_parts : sequence of str
        LibriSpeech parts pooled into each split (e.g. the three train parts for 960 h).
    token_min_count : int
        Training occurrences a character needs for its own token.
    workers : int
        Processes reading and converting audio.

    Returns
    -------
    dict
        The preparation report (``None`` when ``out`` was already prepared with these options).
    """
    options = {"format": "librispeech", "corpus_folder": str(Path(corpus_folder).resolve()),
               "parts": [list(train_parts), list(dev_parts), list(test_parts)],
               "token_min_count": token_min_count}
    if already_prepared(out, options):
        logger.info("%s already prepared from %s", out, corpus_folder)
        return None
    from lhotse.recipes import prepare_librispeech as lhotse_prepare

    report = PreparationReport(source=str(corpus_folder))
    parts = {"train": train_parts, "dev": dev_parts, "test": test_parts}
    missing = [p for ps in parts.values() for p in ps if not (Path(corpus_folder) / p).is_dir()]
    if missing:
        raise PreparationError(f"{corpus_folder}: no LibriSpeech part folder(s) {missing}")
    manifests = lhotse_prepare(corpus_folder, dataset_parts=[p for ps in parts.values() for p in ps],
                               num_jobs=workers)
    splits = {split: [u for part in split_parts for u in part_utterances(
        Path(corpus_folder) / part, manifests.get(part), report)] for split, split_parts in parts.items()}
    return write_prepared_corpus(splits, out, report, options, token_min_count, workers)


def part_utterances(part_folder, manifest, report):
    """One part's utterances; transcript lines without audio (lhotse drops them) are counted here."""
    domain = "other" if part_folder.name.endswith("other") else "clean"
    supervisions = {s.id: s for s in manifest["supervisions"]} if manifest else {}
    recordings = manifest["recordings"] if manifest else {}
    utterances = []
    for trans in sorted(part_folder.rglob("*.trans.txt")):
        for line_number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            utt_id = line.split(maxsplit=1)[0] if line.strip() else ""
            where = f"{trans}:{line_number}"
            if utt_id not in supervisions:
                report.skip("missing audio", f"{where} ({utt_id}: no {utt_id}.flac beside it)")
                continue
            sup = supervisions[utt_id]
            utterances.append(SourceUtterance(utt_id, recordings[sup.recording_id], sup.start, sup.duration,
                                              sup.speaker, "en", sup.text, where, domain))
    return utterances
