#!/usr/bin/env python3
"""Step 2: adapt a pooled teacher to the target language on its few labelled minutes.

The inventory is extended with the target's new characters (logged, and in
results.json); the output layer keeps its old rows. ``--adapt_layers=output``
fine-tunes only the output layer.

    python recipes/low_resource/adapt_teacher.py hparams/low_resource/adapt.yaml --teacher_name=conformer
    python recipes/low_resource/adapt_teacher.py hparams/low_resource/adapt.yaml --teacher_name=tdnn --adapt_layers=output
"""

import sys

from speechkd.brains.low_resource import adapt_teacher, prepare_target_data
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_target_data(hparams)
    adapt_teacher(hparams, run_opts)
