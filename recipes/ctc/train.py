#!/usr/bin/env python3
"""Train a CTC acoustic model (teacher or student).

The YAML names the data preparation (speechkd's embedded corpus by default),
the model and the objective (CTC alone); the checkpoint with the best dev
WER is tested on every ``test_csvs`` set (``wer_<set>.txt``, ``results.json``).

    python recipes/ctc/train.py hparams/ctc/conformer.yaml
    python recipes/ctc/train.py hparams/ctc/student.yaml --data_folder=data/numbers-small --seed=2
    torchrun --nproc_per_node=2 recipes/ctc/train.py hparams/ctc/student.yaml --distributed_backend=gloo

A killed run resumes from its last checkpoint when rerun with the same command, to
the weights an uninterrupted run gets; a rerun with other hyperparameters is refused
(the differences named) unless ``--restart=True`` asks to start clean.
"""

import os
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.experiment import build_model, inventory_for, load_hparams, open_experiment

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])

    # Data preparation: whatever function the YAML names, on the main process only
    sb.utils.distributed.run_on_main(hparams["prepare"])

    # Tokens from the transcripts, then the model (its output layer is sized by them)
    manifests = [hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]]
    inventory = inventory_for(manifests, os.path.join(hparams["output_folder"], "tokens.txt"))
    model = build_model(hparams["model"], inventory, hparams["output_folder"], hparams["name"])
    hparams["checkpointer"].add_recoverable("model", model)

    train_set = make_dataset(hparams["train_csv"], hparams["data_folder"], inventory, sort=hparams["sorting"])
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
