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

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.brains.ctc import prepare_data
from speechkd.brains.distill import cache_teachers

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["cache_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    prepare_data(hparams)
    cache = cache_teachers(hparams, run_opts)
    print(f"cached {len(cache)} utterances from {len(cache.teacher_names)} teachers "
          f"in {hparams['cache_folder']}")
