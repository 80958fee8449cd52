#!/usr/bin/env python3
"""Baseline: the small student trained with CTC on the target's labelled minutes only.

    python recipes/low_resource/train_scratch.py hparams/low_resource/scratch.yaml
"""

import sys

from speechkd.brains.ctc import train_ctc
from speechkd.brains.low_resource import prepare_target_data
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_target_data(hparams)
    train_ctc(hparams, run_opts)
