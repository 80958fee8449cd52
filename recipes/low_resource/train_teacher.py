#!/usr/bin/env python3
"""Step 1: train a multilingual CTC teacher on the pooled high-resource languages.

Builds the corpus (the target language gets a few labelled minutes and an
unlabelled pool), writes the pooled and target-only manifests, and trains the
teacher on the pool (or the language subset in ``teacher_languages``).

    python recipes/low_resource/train_teacher.py hparams/low_resource/teacher_conformer.yaml
    python recipes/low_resource/train_teacher.py hparams/low_resource/teacher_crdnn.yaml
    python recipes/low_resource/train_teacher.py hparams/low_resource/teacher_tdnn.yaml
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.low_resource import train_pool_teacher, prepare_target_data

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
    train_pool_teacher(hparams, run_opts)
