#!/usr/bin/env python3
"""Baseline: fine-tune the source model with CTC on the few labelled target utterances.

    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml
    python recipes/domain_adaptation/finetune.py hparams/domain_adaptation/finetune.yaml \
        --domain=reverb --target_labels=20
"""

import sys

from speechkd.brains.adaptation import finetune_source
from speechkd.brains.ctc import prepare_data
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_data(hparams)
    finetune_source(hparams, run_opts)
