"""Subsets of a corpus: per-language views (low-resource) and a few labelled utterances (adaptation).

The corpus builder writes one manifest per split holding every language. The
low-resource recipe needs, from the same corpus folder,

- the *pool*: the high-resource languages' train and dev utterances (the
  target left out), on which the multilingual teachers are trained;
- the *target*: its few labelled train minutes (optionally cut to a prefix of
  a given length, so 1, 5 and 15 minutes come from one corpus), its dev and
  test speakers, and its unlabelled audio. Like the corpus's ``unlabelled.csv``,
  ``target_unlabelled.csv`` keeps the true text for analysis only: the
  recipe blanks it in memory (:func:`speechkd.data.pipelines.hide_transcripts`)
  and never trains on it.

:func:`prepare_low_resource` and :func:`prepare_pool_teacher` are the prepare
functions the low-resource YAMLs name. Rows are copied unchanged (``wav``
keeps ``$data_root``), so the subset manifests live anywhere and still
resolve against the corpus folder.

Domain adaptation with few target labels uses :func:`labelled_subset`: a
reproducible choice of the utterances whose transcripts may be used.
"""

import hashlib
import logging
import os

import speechbrain as sb

from speechkd.data.corpus import build_corpus
from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.text import TokenInventory

logger = logging.getLogger(__name__)


def select_rows(rows, languages=None, exclude=(), max_minutes=None):
    """Rows of the given languages, optionally the shortest prefix reaching ``max_minutes``.

    Parameters
    ----------
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


def write_language_manifests(data_folder, out_folder, target, pool=None, target_minutes=None):
    """Write the pooled and target-only manifests of a corpus.

    Parameters
    ----------
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
    """Write the rows of several manifests, in order, to one manifest; refuses repeated IDs.

    A row may have an empty transcript (unlabelled audio): the reader of the
    result says which rows are labelled (``make_dataset(labelled_ids=...)``).
    """
    rows, seen = [], set()
    for path in paths:
        for row in read_manifest(path, allow_empty_wrd=True):
            if row["ID"] in seen:
                raise ValueError(f"{path}: utterance {row['ID']} already in an earlier manifest")
            seen.add(row["ID"])
            rows.append(row)
    write_manifest(out_path, rows)
    return out_path


def subset_manifest(manifest, utt_ids, out_path):
    """Write the rows of ``manifest`` whose ID is in ``utt_ids`` (manifest order) to ``out_path``."""
    utt_ids = set(utt_ids)
    write_manifest(out_path, [row for row in read_manifest(manifest) if row["ID"] in utt_ids])
    return out_path


# --------------------------------------------------------------------------- prepare functions
def prepare_low_resource(task, size, data_folder, seed, target, target_minutes_built, unlabelled_minutes,
                         subset_folder, languages=None, pool=None, target_minutes=None):
    """Build the corpus with a low-resource target, then write its pooled and target-only manifests.

    The prepare function of the low-resource YAMLs (``prepare: !name:``,
    run on the main process only).

    Parameters
    ----------
    task, size, data_folder, seed
        The corpus (:func:`speechkd.data.corpus.build_corpus`'s ``task``,
        ``size``, ``out`` and ``seed``); built once, reused afterwards.
    target : str
        The low-resource language.
    target_minutes_built : float
        Labelled target minutes built (the most any run uses).
    unlabelled_minutes : float
        Untranscribed target minutes built.
    subset_folder : str
        Receives the manifests of :func:`write_language_manifests`.
    languages : list of str, optional
        The corpus languages (default: all the task's).
    pool : list of str, optional
        High-resource languages (default: every corpus language but the target).
    target_minutes : float, optional
        Labelled minutes used: a prefix of those built (default: all).

    Returns
    -------
    dict
        :func:`write_language_manifests`'s paths.
    """
    build_corpus(task=task, size=size, out=data_folder, seed=seed, languages=languages,
                 lang_minutes={target: target_minutes_built},
                 unlabelled_minutes={target: unlabelled_minutes}, progress=False)
    return write_language_manifests(data_folder, subset_folder, target, pool=pool,
                                    target_minutes=target_minutes)


def prepare_pool_teacher(train_csv, tokens, teacher_languages=None, **low_resource):
    """:func:`prepare_low_resource`, then one pooled teacher's train manifest and the pool's inventory.

    Every teacher of the pool gets the token inventory of the whole pool's
    text (train, dev and test), so teachers trained on different language
    subsets still form one ensemble.

    Parameters
    ----------
    train_csv : str
        Receives the pool's train rows in ``teacher_languages``.
    tokens : str
        The teacher's ``tokens.txt``; written unless it exists (a resumed run keeps its own).
    teacher_languages : list of str, optional
        This teacher's languages, a subset of the pool (default: the whole pool).
    **low_resource
        :func:`prepare_low_resource`'s arguments.
    """
    paths = prepare_low_resource(**low_resource)
    rows = select_rows(read_manifest(paths["pool_train"]), teacher_languages)
    if not rows:
        raise ValueError(f"{paths['pool_train']} has no utterances in {teacher_languages}")
    write_manifest(train_csv, rows)
    if not os.path.exists(tokens):  # from the pool's training text; dev/test characters it lacks are <unk>
        train_texts = [row["wrd"] for row in read_manifest(paths["pool_train"])]
        other_texts = [row["wrd"] for name in ("pool_dev", "pool_test") for row in read_manifest(paths[name])]
        os.makedirs(os.path.dirname(tokens) or ".", exist_ok=True)
        TokenInventory.from_training_texts(train_texts, other_texts=other_texts)[0].save(tokens)
    return paths


# --------------------------------------------------------------------------- a few labels
def select_labelled(utt_ids, amount, seed=0):
    """The few utterances whose transcripts may be used, chosen reproducibly.

    Parameters
    ----------
    utt_ids : iterable of str
    amount : int or float
        A count (int), or a fraction of the utterances (float in ``[0, 1]``).
    seed : int
        Utterances are ranked by ``sha256(seed, ID)``; the first ``amount`` are kept.

    Returns
    -------
    list of str
        The chosen IDs, in rank order.
    """
    utt_ids = sorted(set(utt_ids))
    if isinstance(amount, float):
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"target_labels as a fraction must be in [0, 1], got {amount}")
        count = round(amount * len(utt_ids))
    else:
        count = int(amount)
        if count < 0:
            raise ValueError(f"target_labels must be >= 0, got {amount}")
    rank = sorted(utt_ids, key=lambda u: hashlib.sha256(f"{seed}\x1f{u}".encode()).hexdigest())
    return rank[: min(count, len(utt_ids))]


def labelled_subset(manifest, amount, seed, folder):
    """:func:`select_labelled` over a manifest's utterances, recorded in ``<folder>/labelled_ids.txt``.

    Returns
    -------
    list of str
        The chosen IDs.
    """
    ids = [row["ID"] for row in read_manifest(manifest)]
    chosen = select_labelled(ids, amount, seed)
    if sb.utils.distributed.if_main_process():  # every rank chooses the same IDs; one writes them
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "labelled_ids.txt"), "w") as fout:
            fout.writelines(f"{utt}\n" for utt in chosen)
    logger.info("%d of %d utterances of %s labelled", len(chosen), len(ids), manifest)
    return chosen
