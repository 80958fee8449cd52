#!/usr/bin/env python3
"""Step 3: cache the adapted ensemble on the target's audio; evaluate the ensemble.

    python recipes/low_resource/cache_teachers.py hparams/low_resource/cache.yaml
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.low_resource import cache_target, prepare_target_data

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["cache_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_target_data(hparams)
    cache_target(hparams, run_opts)
