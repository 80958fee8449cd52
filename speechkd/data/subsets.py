"""Per-language views of a corpus: pooled high-resource manifests and target-only ones.

The corpus builder writes one manifest per split holding every language. The
low-resource recipe needs, from the same corpus folder,

- the *pool*: the high-resource languages' train and dev utterances (the
  target left out), on which the multilingual teachers are trained;
- the *target*: its few labelled train minutes (optionally cut to a prefix of
  a given length, so 1, 5 and 15 minutes come from one corpus), its dev and
  test speakers, and its unlabelled audio. Like the corpus's ``unlabelled.csv``,
  ``target_unlabelled.csv`` keeps the true text for analysis only: the
  recipe blanks it in memory (:func:`speechkd.brains.low_resource.hide_transcripts`)
  and never trains on it.

Rows are copied unchanged (``wav`` keeps ``$data_root``), so the subset
manifests live anywhere and still resolve against the corpus folder.
"""

import logging
import os

from speechkd.data.manifest import read_manifest, write_manifest

logger = logging.getLogger(__name__)


def select_rows(rows, languages=None, exclude=(), max_minutes=None):
    """Rows of the given languages, optionally the shortest prefix reaching ``max_minutes``.

    Arguments
    ---------
    rows : list of dict
        Manifest rows in manifest order.
    languages : sequence of str, optional
        Languages kept (default: all).
    exclude : sequence of str
        Languages dropped.
    max_minutes : float, optional
        Keep rows in order until their total duration reaches this many
        minutes (the row that crosses the limit is kept), as the corpus
        builder does; ``None`` keeps all.

    Returns
    -------
    list of dict
    """
    kept = [row for row in rows
            if (languages is None or row["lang"] in languages) and row["lang"] not in exclude]
    if max_minutes is None:
        return kept
    prefix, seconds = [], 0.0
    for row in kept:
        if seconds >= 60.0 * max_minutes:
            break
        prefix.append(row)
        seconds += float(row["duration"])
    return prefix


def manifest_minutes(path):
    """Total duration of a manifest in minutes."""
    return sum(float(row["duration"]) for row in read_manifest(path)) / 60.0


def write_language_manifests(data_folder, out_folder, target, pool=None, target_minutes=None):
    """Write the pooled and target-only manifests of a corpus.

    Arguments
    ---------
    data_folder : str
        Corpus folder (``train.csv``, ``dev.csv``, ``test.csv`` and, when
        present, ``unlabelled.csv``).
    out_folder : str
        Receives ``pool_train.csv``, ``pool_dev.csv``, ``pool_test.csv``,
        ``target_train.csv``, ``target_dev.csv``, ``target_test.csv`` and
        ``target_unlabelled.csv`` (true text kept for analysis only).
    target : str
        The low-resource language.
    pool : sequence of str, optional
        High-resource languages (default: every corpus language but the target).
        Naming the target here is an error.
    target_minutes : float, optional
        Labelled target minutes kept (a prefix of ``train.csv``'s target rows);
        ``None`` keeps them all.

    Returns
    -------
    dict
        Manifest name (``pool_train``, ...) -> path, plus ``minutes``: the
        labelled and unlabelled target minutes actually written.
    """
    if pool is not None and target in pool:
        raise ValueError(f"target language {target!r} is also in the pool {list(pool)}")
    splits = {split: read_manifest(os.path.join(data_folder, f"{split}.csv"))
              for split in ("train", "dev", "test")}
    if not any(row["lang"] == target for row in splits["test"]):
        raise ValueError(f"{data_folder}/test.csv has no {target!r} utterances; "
                         f"build the corpus with {target!r} among its languages")
    unlabelled_path = os.path.join(data_folder, "unlabelled.csv")
    unlabelled = read_manifest(unlabelled_path) if os.path.exists(unlabelled_path) else []
    outputs = {
        f"pool_{split}": select_rows(rows, pool, exclude=(target,)) for split, rows in splits.items()
    }
    outputs.update(
        target_train=select_rows(splits["train"], [target], max_minutes=target_minutes),
        target_dev=select_rows(splits["dev"], [target]),
        target_test=select_rows(splits["test"], [target]),
        target_unlabelled=select_rows(unlabelled, [target]),
    )
    if not outputs["pool_train"]:
        raise ValueError(f"{data_folder}/train.csv has no pool languages besides {target!r}")
    os.makedirs(out_folder, exist_ok=True)
    paths = {}
    for name, rows in outputs.items():
        paths[name] = os.path.join(out_folder, f"{name}.csv")
        write_manifest(paths[name], rows)
    minutes = {name: sum(float(r["duration"]) for r in outputs[name]) / 60.0
               for name in ("target_train", "target_unlabelled", "pool_train")}
    logger.info("target %s: %.2f labelled min, %.2f unlabelled min; pool %s: %.2f min",
                target, minutes["target_train"], minutes["target_unlabelled"],
                sorted({r["lang"] for r in outputs["pool_train"]}), minutes["pool_train"])
    paths["minutes"] = minutes
    return paths


def concat_manifests(paths, out_path):
    """Write the rows of several manifests, in order, to one manifest; refuses repeated IDs."""
    rows, seen = [], set()
    for path in paths:
        for row in read_manifest(path):
            if row["ID"] in seen:
                raise ValueError(f"{path}: utterance {row['ID']} already in an earlier manifest")
            seen.add(row["ID"])
            rows.append(row)
    write_manifest(out_path, rows)
    return out_path
