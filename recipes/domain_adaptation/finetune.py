#!/usr/bin/env python3
"""Baseline: fine-tune the source model with CTC on the few labelled target utterances.

    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml
    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml \
        --domain=reverb --target_labels=20
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.adaptation import finetune_source
from speechkd.brains.ctc import prepare_data

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_data(hparams)
    finetune_source(hparams, run_opts)
