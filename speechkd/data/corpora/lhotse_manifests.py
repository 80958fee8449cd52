"""lhotse manifests: recordings + supervisions JSONL, or cuts JSONL, one set per split.

Anything lhotse prepares (its ~100 corpus recipes) comes in this way:

    prepare_lhotse({"train": "cuts_train.jsonl.gz", "dev": [...], "test": [...]}, "data/mine")

A split's value is a cuts file or a ``[recordings, supervisions]`` pair;
without dev and test, train is split by speaker.
"""

from __future__ import annotations

from pathlib import Path

from speechkd.data.corpora.common import (
    PreparationError,
    PreparationReport,
    SourceUtterance,
    already_prepared,
    check_language,
    speaker_disjoint_split,
    write_prepared_corpus,
)


def prepare_lhotse(manifests, out, lang=None, dev_fraction=0.1, test_fraction=0.1, seed=0,
                   domain="clean", token_min_count=1, workers=1):
    """Prepare lhotse manifests into ``out`` (see :mod:`speechkd.data.corpora.common`).

    Parameters
    ----------
    manifests : dict
        ``{"train": cuts_path or [recordings_path, supervisions_path], "dev": ..., "test": ...}``.
    out : str
    lang : str, optional
        Language of every supervision; default each supervision's ``language``.
    dev_fraction, test_fraction, seed
        The speaker-disjoint split when only ``train`` is given.
    domain : str
    token_min_count, workers
        As for :func:`speechkd.data.corpora.common.write_prepared_corpus`.
    """
    def resolved(value):
        return [str(Path(v).resolve()) for v in value] if isinstance(value, list | tuple) else str(Path(value).resolve())

    options = {"format": "lhotse", "manifests": {k: resolved(v) for k, v in manifests.items()}, "lang": lang,
               "fractions": [dev_fraction, test_fraction], "seed": seed, "domain": domain,
               "token_min_count": token_min_count}
    if already_prepared(out, options):
        return None
    report = PreparationReport(source=str(manifests.get("train")))
    splits = {split: read_cuts(value, lang, domain) for split, value in manifests.items()}
    if set(splits) == {"train"}:
        splits = speaker_disjoint_split(splits["train"], dev_fraction, test_fraction, seed,
                                        where=str(manifests["train"]))
    elif not {"train", "dev", "test"} <= set(splits):
        raise PreparationError(f"manifests: give train alone (speaker split) or train, dev and test, got {sorted(splits)}")
    return write_prepared_corpus(splits, out, report, options, token_min_count, workers)


def read_cuts(value, lang, domain):
    """Utterances (one per supervision) of a cuts file or a recordings/supervisions pair."""
    from lhotse import CutSet, load_manifest

    if isinstance(value, list | tuple):
        recordings, supervisions = (load_manifest(p) for p in value)
        cuts, where = CutSet.from_manifests(recordings=recordings, supervisions=supervisions), str(value[1])
    else:
        cuts, where = CutSet.from_file(value), str(value)
    utterances = []
    for cut in cuts:
        for sup in cut.supervisions:
            utt_lang = check_language(lang or (sup.language or ""), f"{where} ({sup.id})")
            utterances.append(SourceUtterance(sup.id, cut.recording, cut.start + sup.start, sup.duration,
                                              sup.speaker or sup.id, utt_lang, sup.text or "",
                                              f"{where} ({sup.id})", domain))
    return utterances
