#!/usr/bin/env python3
"""Step 3: cache the adapted ensemble on the target's audio; evaluate the ensemble.

    python recipes/low_resource/cache_teachers.py hparams/low_resource/cache.yaml
"""

import sys

from speechkd.brains.low_resource import cache_target, prepare_target_data
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:], folder_key="cache_folder")
    prepare_target_data(hparams)
    cache_target(hparams, run_opts)
