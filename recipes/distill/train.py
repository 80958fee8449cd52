#!/usr/bin/env python3
"""Distil a teacher ensemble into a student by frame-level posterior matching.

    L = alpha * CTC + (1 - alpha) * tau^2 * mean_t KL(teachers^tau || student^tau)

Teachers come from the posterior cache (recipes/distill/cache_teachers.py)
or, with ``--online=True``, run inside the training step. ``--alpha=0``
needs no transcripts.

    python recipes/distill/train.py hparams/distill/student.yaml
    python recipes/distill/train.py hparams/distill/student.yaml --strategy=best --temperature=2
"""

import sys

from speechkd.brains.ctc import prepare_data
from speechkd.brains.distill import train_distill
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_data(hparams)
    train_distill(hparams, run_opts)
