#!/usr/bin/env python3
"""Teacher-student domain adaptation on parallel audio, with few or no target labels.

The source model hears the clean half of each pair (cached or online), the
student the target-domain half, and learns the teacher's posteriors; a few
target transcripts join through ``alpha`` or conditional T/S. Tests on the
target domain and on clean speech.

    python recipes/ctc/train.py hparams/domain_adaptation/source.yaml
    python recipes/distill/cache_teachers.py hparams/domain_adaptation/cache.yaml
    python recipes/domain_adaptation/train.py hparams/domain_adaptation/adapt.yaml --domain=noise
    python recipes/domain_adaptation/train.py hparams/domain_adaptation/adapt.yaml \
        --target_labels=0.2 --conditional=frame --variant=cts
"""

import sys

from speechkd.brains.adaptation import train_adaptation
from speechkd.brains.ctc import prepare_data
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_data(hparams)
    train_adaptation(hparams, run_opts)
