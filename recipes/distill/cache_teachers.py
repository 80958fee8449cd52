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

from speechkd.data.pipelines import make_dataset, refuse_conflicting_ids
from speechkd.distill.teachers import TeacherEnsemble, build_cache, cache_features
from speechkd.experiment import load_hparams, open_experiment, run_device, run_precision

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)  # under torchrun each rank caches its share of the shards
    open_experiment(hparams["cache_folder"], resolved_file, overrides)  # the main rank holds the folder from here on
    sb.utils.distributed.run_on_main(hparams["prepare"])

    ensemble = TeacherEnsemble(hparams["teachers"], device=run_device(run_opts))
    refuse_conflicting_ids(hparams["cache_splits"].values(), hparams["data_folder"])  # the cache is keyed by ID
    # batches sorted by duration: big teachers spend little on padding
    datasets = {split: make_dataset(csv, hparams["data_folder"], need_text=False, sort="ascending")
                for split, csv in hparams["cache_splits"].items()}
    dev_manifest = os.path.abspath(hparams["cache_splits"]["dev"]) if "dev" in hparams["cache_splits"] else None
    cache = build_cache(
        ensemble, datasets, hparams["cache_folder"], hparams["top_k"],
        cache_features(hparams["data_folder"], hparams["teacher_domain"]),
        batch_size=hparams["batch_size"], precision=run_precision(run_opts),
        shard_utts=hparams["shard_utts"], manifest=dev_manifest,
    )
    print(f"cached {len(cache)} utterances from {len(cache.teacher_names)} teachers in {hparams['cache_folder']}")
