#!/usr/bin/env python3
"""Run a trained teacher ensemble once over the data and cache its posteriors.

Stores per utterance and teacher the top-k frame log-posteriors (fp16) in
memory-mapped shards, each teacher's per-utterance error (for the ``best``
strategy) and dev WER (for ``weighted``). A killed run resumes; a cache from
other teachers is refused with the difference named.

    python recipes/distill/cache_teachers.py hparams/distill/cache.yaml \
        --teachers="{conformer: results/ctc/conformer/1234, crdnn: results/ctc/crdnn/1234}"
"""

import sys

from speechkd.brains.ctc import prepare_data
from speechkd.brains.distill import cache_teachers
from speechkd.experiment import start_experiment

if __name__ == "__main__":
    hparams, run_opts = start_experiment(sys.argv[1:], folder_key="cache_folder")
    prepare_data(hparams)
    cache = cache_teachers(hparams, run_opts)
    print(f"cached {len(cache)} utterances from {len(cache.teacher_names)} teachers "
          f"in {hparams['cache_folder']}")
