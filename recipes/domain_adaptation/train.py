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

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.adaptation import train_adaptation
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
    train_adaptation(hparams, run_opts)
