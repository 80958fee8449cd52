#!/usr/bin/env python3
"""Step 4: distil the adapted ensemble into a small target-language student.

Labelled minutes plus the unlabelled audio (``--use_unlabelled=False`` for
labelled only), optionally filtered to the utterances the teachers agree on.

    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml
    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml \
        --agreement_filter=teacher_cer --agreement_threshold=20 --name=student_filtered
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.low_resource import train_student, prepare_target_data

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
    train_student(hparams, run_opts)
