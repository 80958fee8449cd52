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

from speechkd.brains.low_resource import prepare_target_data, train_pool_teacher
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_target_data(hparams)
    train_pool_teacher(hparams, run_opts)
