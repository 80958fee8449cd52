#!/usr/bin/env python3
"""Step 3: cache the adapted ensemble on the target's audio; test the ensemble itself.

The adapted teachers' top-k posteriors are cached on the target's labelled
minutes, its unlabelled audio (transcripts blanked: never read) and its dev
set (each teacher's dev WER, for the ``weighted`` strategy). The ensemble,
fused as the students' teacher target is (``ensemble_strategy`` at τ = 1),
is then tested on the target's test speakers: ``wer_<set>.txt`` and
``results.json`` in ``ensemble_folder``.

    python recipes/low_resource/cache_teachers.py hparams/low_resource/cache.yaml
"""

import os
import sys

import speechbrain as sb

from speechkd.data.pipelines import hide_transcripts, make_dataset, refuse_conflicting_ids
from speechkd.distill.teachers import TeacherEnsemble, build_cache, cache_features
from speechkd.evaluation import fused_error_rates
from speechkd.experiment import load_hparams, open_experiment, run_device, run_precision
from speechkd.metrics import write_results_json
from speechkd.models import count_parameters

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams, resolved_file = load_hparams(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)  # under torchrun each rank caches its share of the shards
    open_experiment(hparams["cache_folder"], resolved_file, overrides)  # the main rank holds the folder from here on
    sb.utils.distributed.run_on_main(hparams["prepare"])

    ensemble = TeacherEnsemble(hparams["teachers"], device=run_device(run_opts))
    refuse_conflicting_ids([hparams["train_csv"], hparams["unlabelled_csv"], hparams["dev_csv"]],
                           hparams["data_folder"])  # the cache is keyed by ID
    audio = {"data_root": hparams["data_folder"], "need_text": False, "sort": "none"}
    datasets = {
        "train": make_dataset(hparams["train_csv"], **audio),
        "unlabelled": hide_transcripts(make_dataset(hparams["unlabelled_csv"], **audio)),
        "dev": make_dataset(hparams["dev_csv"], **audio),
    }
    cache = build_cache(
        ensemble, datasets, hparams["cache_folder"], hparams["top_k"],
        cache_features(hparams["data_folder"], hparams["teacher_domain"]),
        batch_size=hparams["batch_size"], precision=run_precision(run_opts),
        shard_utts=hparams["shard_utts"], manifest=os.path.abspath(hparams["dev_csv"]),
    )
    print(f"cached {len(cache)} utterances from {len(cache.teacher_names)} teachers in {hparams['cache_folder']}")

    # The adapted ensemble on the target's test speakers (the main process writes its results)
    if not sb.utils.distributed.if_main_process():
        sys.exit(0)
    folder = hparams["ensemble_folder"]
    os.makedirs(folder, exist_ok=True)
    for test_csv in hparams["test_csvs"]:
        name = os.path.splitext(os.path.basename(test_csv))[0]
        errors = fused_error_rates(ensemble, ensemble.inventory,
                                   make_dataset(test_csv, hparams["data_folder"], sort="none"),
                                   hparams["ensemble_strategy"], batch_size=hparams["batch_size"])
        errors.write_wer_file(os.path.join(folder, f"wer_{name}.txt"))
        summary = errors.summary()
        write_results_json(os.path.join(folder, "results.json"), {
            "params": sum(count_parameters(t.model, trainable_only=False) for t in ensemble.teachers),
            "teachers": ensemble.names, "strategy": hparams["ensemble_strategy"], "sets": {name: summary},
        })
        print(f"adapted ensemble ({hparams['ensemble_strategy']}) on {name}: "
              f"WER {summary['wer']:.2f}% CER {summary['cer']:.2f}%")
