#!/usr/bin/env python3
"""Step 2: adapt a pooled teacher to the target language on its few labelled minutes.

The teacher's inventory is extended with the target's new characters (old
indices kept; logged, and in results.json and model.json); its output layer
grows, keeping the old rows. ``--adapt_layers=output`` fine-tunes only the
output layer. CTC on the target's labelled minutes, tested on its test speakers.

    python recipes/low_resource/adapt_teacher.py hparams/low_resource/adapt.yaml --teacher_name=conformer
    python recipes/low_resource/adapt_teacher.py hparams/low_resource/adapt.yaml --teacher_name=tdnn --adapt_layers=output
"""

import logging
import os
import sys

import speechbrain as sb

from speechkd.brains.distill import DistillBrain
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import make_dataset, test_sets
from speechkd.experiment import (
    TOKENS_FILE,
    adapted_model,
    load_hparams,
    open_experiment,
    write_adapted_card,
)
from speechkd.metrics import write_results_json
from speechkd.models import count_parameters
from speechkd.models.surgery import freeze_for_adaptation

logger = logging.getLogger(__name__)

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    open_experiment(hparams["output_folder"], resolved_file, overrides, restart=hparams["restart"])
    sb.utils.distributed.run_on_main(hparams["prepare"])

    # The pooled teacher, its inventory and output layer extended to the target's characters
    manifests = [hparams["train_csv"], hparams["valid_csv"], *hparams["test_csvs"]]
    model, inventory, added = adapted_model(hparams["teacher"],
                                            [row["wrd"] for path in manifests for row in read_manifest(path)])
    logger.info("adapting %s to the target: added %d characters to its inventory: %s",
                hparams["teacher"], len(added), " ".join(added) or "(none)")
    freeze_for_adaptation(model, hparams["adapt_layers"])
    if sb.utils.distributed.if_main_process():
        inventory.save(os.path.join(hparams["output_folder"], TOKENS_FILE))
        write_adapted_card(hparams["teacher"], hparams["output_folder"], hparams["name"], inventory, added)
        write_results_json(os.path.join(hparams["output_folder"], "results.json"), {
            "added_tokens": added, "adapt_layers": hparams["adapt_layers"],
            "trainable_params": count_parameters(model),  # after freezing
        })
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
