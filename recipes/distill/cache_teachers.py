#!/usr/bin/env python3
"""Run the teachers once over the data and cache their posteriors.

Stores per utterance and teacher the top-k frame log-posteriors (fp16) in
memory-mapped shards, each teacher's per-utterance error (for the ``best``
strategy) and dev WER (for ``weighted``). A killed run resumes; a cache from
other teachers is refused with the difference named.

    python recipes/distill/cache_teachers.py hparams/distill/cache.yaml \
        --teachers="[results/ctc/conformer/1234, results/ctc/crdnn/1234]"
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechkd.data.pipelines import make_dataset
from speechkd.distill.teachers import TeacherEnsemble, build_cache, cache_features

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(hparams["cache_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    sb.utils.distributed.run_on_main(hparams["prepare"])

    ensemble = TeacherEnsemble(hparams["teachers"], device=run_opts["device"])
    datasets = {split: make_dataset(csv, hparams["data_folder"], need_text=False, sort="none")
                for split, csv in hparams["cache_splits"].items()}
    cache = build_cache(
        ensemble, datasets, hparams["cache_folder"], hparams["top_k"],
        cache_features(hparams["data_folder"], hparams["teacher_domain"]),
        batch_size=hparams["batch_size"], manifest=os.path.abspath(hparams["cache_splits"]["dev"]),
    )
    print(f"cached {len(cache)} utterances from {len(cache.teacher_names)} teachers in {hparams['cache_folder']}")
