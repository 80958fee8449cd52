#!/usr/bin/env python3
"""Baseline: the small student trained with CTC on the target's labelled minutes only.

    python recipes/low_resource/train_scratch.py hparams/low_resource/scratch.yaml
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.ctc import train_ctc
from speechkd.brains.low_resource import prepare_target_data

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_target_data(hparams)
    train_ctc(hparams, run_opts)
