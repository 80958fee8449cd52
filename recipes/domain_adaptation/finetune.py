#!/usr/bin/env python3
"""Baseline: fine-tune the source model with CTC on the few labelled target utterances.

The labelled utterances are the ones adapt.yaml's ``target_labels`` and
``labels_seed`` give the T/S student (``labelled_ids.txt``,
``train_labelled.csv``). The source keeps its tokens and feature normalizer.

    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml
    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml \
        --domain=reverb --target_labels=20
"""

import os
import shutil
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.data.subsets import labelled_subset, subset_manifest
from speechkd.experiment import MODEL_CARD, TOKENS_FILE, load_hparams, load_model, open_experiment

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])
    sb.utils.distributed.run_on_main(hparams["prepare"])

    # The source model, its card and tokens: the fine-tuned model is the same model
    model, inventory = load_model(hparams["source_folder"])
    for name in (MODEL_CARD, TOKENS_FILE):
        shutil.copy(os.path.join(hparams["source_folder"], name), os.path.join(hparams["output_folder"], name))
    hparams["checkpointer"].add_recoverable("model", model)

    # The few labelled target utterances, and only those
    labelled = labelled_subset(hparams["train_csv"], hparams["target_labels"], hparams["labels_seed"],
                               hparams["output_folder"])
    if not labelled:
        raise ValueError("fine-tuning needs target_labels > 0")
    train_csv = subset_manifest(hparams["train_csv"], labelled,
                                os.path.join(hparams["output_folder"], "train_labelled.csv"))
    train_set = make_dataset(train_csv, hparams["data_folder"], inventory, sort=hparams["sorting"])
    valid_set = make_dataset(hparams["valid_csv"], hparams["data_folder"], inventory)

    brain = DistillBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        inventory=inventory,
    )
    brain.fit(hparams["epoch_counter"], train_set, valid_set)
    for name, test_set in test_sets(hparams["test_csvs"], hparams["data_folder"], inventory):
        brain.evaluate(test_set, name=name)
