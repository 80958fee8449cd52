#!/usr/bin/env python3
"""Teacher-student domain adaptation on parallel audio, with few or no target labels.

The source model (or an ensemble) is the teacher and hears the clean half of
each parallel pair, from its posterior cache or run online; the student hears
the target-domain half and learns the teacher's posteriors (Li et al. 2017;
Asami et al. 2017). A few target transcripts (``target_labels``) join through
the CTC term (``alpha``) or conditional T/S (``conditional``, Meng et al.
2019). ``--student_signal=sig_target`` draws the target half anew each epoch
from the clean audio (the teacher then runs online). Tests on the target
domain and on clean speech.

    python recipes/ctc/train.py hparams/domain_adaptation/source.yaml
    python recipes/distill/cache_teachers.py hparams/domain_adaptation/cache.yaml
    python recipes/domain_adaptation/train.py hparams/domain_adaptation/adapt.yaml --domain=noise
    python recipes/domain_adaptation/train.py hparams/domain_adaptation/adapt.yaml \
        --target_labels=0.2 --conditional=frame --variant=cts
"""

import os
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.parallel import add_on_the_fly_target, check_parallel_pairs
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.data.subsets import labelled_subset
from speechkd.distill.teachers import TeacherEnsemble, cache_features, open_cache_for
from speechkd.experiment import (
    build_model,
    load_hparams,
    open_experiment,
    run_device,
    student_inventory,
)
from speechkd.models.surgery import init_from

SIGNALS = ("sig", "sig_target")


def train_set_for(hparams, inventory, labelled, teachers_online):
    """The student's training set: the target half, stored or drawn on the fly; tokens of the labelled rows."""
    options = {"inventory": inventory, "labelled_ids": labelled, "sort": hparams["sorting"]}
    if hparams["student_signal"] == "sig_target":
        dataset = make_dataset(hparams["source_train_csv"], hparams["data_folder"], **options)
        return add_on_the_fly_target(dataset, hparams["domain"], hparams["corpus_seed"],
                                     hparams["epoch_counter"], hparams["domain_options"])
    check_parallel_pairs(hparams["train_csv"], hparams["source_train_csv"], hparams["data_folder"])
    parallel = hparams["source_train_csv"] if teachers_online else None  # sig_parallel: what the teacher hears
    return make_dataset(hparams["train_csv"], hparams["data_folder"], parallel_manifest=parallel, **options)


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])
    sb.utils.distributed.run_on_main(hparams["prepare"])
    if hparams["student_signal"] not in SIGNALS:
        raise ValueError(f"student_signal must be one of {SIGNALS}, got {hparams['student_signal']!r}")

    # Teacher: the source model on the clean half, run online (the on-the-fly target needs it) or cached
    on_the_fly = hparams["student_signal"] == "sig_target"
    online = hparams["online"] or on_the_fly
    ensemble = TeacherEnsemble(hparams["teachers"], device=run_device(run_opts), k=hparams["top_k"],
                               signal="sig" if on_the_fly else "sig_parallel")
    teachers = ensemble if online else open_cache_for(
        ensemble, hparams["cache_folder"], hparams["top_k"],
        cache_features(hparams["data_folder"], hparams["teacher_domain"]), os.path.abspath(hparams["dev_csv"]),
    )

    # The student speaks the teachers' tokens; a student of the source's size may start from its weights
    inventory = student_inventory("teachers", ensemble, [], os.path.join(hparams["output_folder"], "tokens.txt"))
    model = build_model(hparams["model"], inventory, hparams["output_folder"], hparams["name"])
    if hparams["init_from_source"]:
        init_from(model, ensemble.teachers[0].model)
    hparams["checkpointer"].add_recoverable("model", model)

    # The few target utterances whose transcripts may be used (labelled_ids.txt)
    labelled = labelled_subset(hparams["train_csv"], hparams["target_labels"], hparams["labels_seed"],
                               hparams["output_folder"])
    if hparams["conditional"] is not None and not labelled:
        raise ValueError("conditional T/S needs some labelled target utterances (target_labels > 0)")
    train_set = train_set_for(hparams, inventory, labelled, teachers_online=online)
    valid_set = make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)

    brain = DistillBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        inventory=inventory,
        teachers=teachers,
    )
    brain.fit(hparams["epoch_counter"], train_set, valid_set)
    for name, test_set in test_sets(hparams["test_csvs"], hparams["data_folder"], inventory):
        brain.evaluate(test_set, name=name)
