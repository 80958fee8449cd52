#!/usr/bin/env python3
"""Step 4: distil the adapted ensemble into a small target-language student.

The student has the target's own characters; the teacher target is mapped
onto them by symbol (``oov_mode``). It learns from the labelled minutes
(CTC, weight ``alpha``) plus, on every row, the cached teachers (KL, weight
``1 - alpha``), the unlabelled audio included (``--use_unlabelled=False``
for labelled only), optionally only the utterances the teachers agree on
(``agreement_filter``, Cui et al. 2017; the kept share goes to results.json).

    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml
    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml \
        --agreement_filter=teacher_cer --agreement_threshold=20 --name=student_filtered
"""

import os
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.data.subsets import concat_manifests, subset_manifest
from speechkd.distill.filtering import agreement_filter, cache_agreement_scores
from speechkd.distill.teachers import TeacherEnsemble, cache_features, open_cache_for
from speechkd.experiment import (
    build_model,
    inventory_for,
    load_hparams,
    open_experiment,
    run_device,
)
from speechkd.metrics import write_results_json


def student_manifest(hparams, cache):
    """The labelled minutes plus the unlabelled rows kept (``use_unlabelled``, agreement filter).

    Returns
    -------
    path : str
        ``<output_folder>/train.csv``.
    report : dict
        The unlabelled rows ``offered`` and ``kept``, ``kept_share``, the filter's ``method`` and ``threshold``.
    """
    folder = hparams["output_folder"]
    parts = [hparams["train_csv"]]
    report = {"offered": 0, "kept": 0, "kept_share": 0.0, "method": None, "threshold": None}
    if hparams["use_unlabelled"]:
        kept = [row["ID"] for row in read_manifest(hparams["unlabelled_csv"])]
        report.update(offered=len(kept), kept=len(kept), kept_share=1.0 if kept else 0.0)
        if hparams["agreement_filter"] is not None:
            kept, report = agreement_filter(cache_agreement_scores(cache, kept), hparams["agreement_filter"],
                                            hparams["agreement_threshold"])
        parts.append(subset_manifest(hparams["unlabelled_csv"], kept, os.path.join(folder, "unlabelled_kept.csv")))
    return concat_manifests(parts, os.path.join(folder, "train.csv")), report


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])
    sb.utils.distributed.run_on_main(hparams["prepare"])

    # Teachers: the adapted ensemble run online, or its posterior cache (refused unless made from
    # exactly these teachers), which the agreement filter reads in either case
    ensemble = TeacherEnsemble(hparams["teachers"], device=run_device(run_opts), k=hparams["top_k"])
    cache = None
    if not hparams["online"] or hparams["agreement_filter"] is not None:
        cache = open_cache_for(ensemble, hparams["cache_folder"], hparams["top_k"],
                               cache_features(hparams["data_folder"], hparams["teacher_domain"]),
                               os.path.abspath(hparams["valid_csv"]))

    # The student, with the target's own characters
    manifests = [hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]]
    inventory = inventory_for(manifests, os.path.join(hparams["output_folder"], "tokens.txt"))
    model = build_model(hparams["model"], inventory, hparams["output_folder"], hparams["name"])
    hparams["checkpointer"].add_recoverable("model", model)

    # Labelled and unlabelled rows in one set: CTC reads the labelled ones only
    train_csv, report = student_manifest(hparams, cache)
    write_results_json(os.path.join(hparams["output_folder"], "results.json"), {"unlabelled": report})
    labelled = [row["ID"] for row in read_manifest(hparams["train_csv"])]
    train_set = make_dataset(train_csv, hparams["data_folder"], inventory, labelled_ids=labelled,
                             sort=hparams["sorting"])
    valid_set = make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)

    brain = DistillBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        inventory=inventory,
        teachers=ensemble if hparams["online"] else cache,
    )
    brain.fit(hparams["epoch_counter"], train_set, valid_set)
    for name, test_set in test_sets(hparams["test_csvs"], hparams["data_folder"], inventory):
        brain.evaluate(test_set, name=name)
