#!/usr/bin/env python3
"""Train a CTC acoustic model (teacher or student) on a speechkd corpus.

Builds the embedded corpus if needed, trains the model named in the YAML,
keeps the checkpoint with the best dev WER, then writes ``wer_<set>.txt``
and ``results.json`` for every test set.

    python recipes/ctc/train.py hparams/ctc/conformer.yaml
    python recipes/ctc/train.py hparams/ctc/student.yaml --data_folder=data/numbers-small --seed=2

A killed run resumes from its last checkpoint when rerun with the same command.
"""

import sys

from speechkd.brains.ctc import prepare_data, train_ctc
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:])
    prepare_data(hparams)
    train_ctc(hparams, run_opts)
