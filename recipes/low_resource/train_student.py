#!/usr/bin/env python3
"""Step 4: distil the adapted ensemble into a small target-language student.

Labelled minutes plus the unlabelled audio (``--use_unlabelled=False`` for
labelled only), optionally filtered to the utterances the teachers agree on.

    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml
    python recipes/low_resource/train_student.py hparams/low_resource/student.yaml \
        --agreement_filter=teacher_cer --agreement_threshold=20 --name=student_filtered
"""

import sys

from speechkd.brains.low_resource import prepare_target_data, train_student
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_target_data(hparams)
    train_student(hparams, run_opts)
