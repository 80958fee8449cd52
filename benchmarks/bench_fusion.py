"""Greedy test WER of CTC teachers, alone and fused by every strategy.

Runs the teachers once over a manifest into a full-distribution posterior
cache (:func:`speechkd.evaluation.ensemble_error_rates`, as the pipeline's
evaluate stage does), then decodes each teacher and each fusion strategy.
Shows whether teachers trained apart fuse: CTC models emit a token's spike
at frames of their own, and their average then smears it (benchmarks/RESULTS.md,
"Issue 12: ... the fusion of CTC teachers").

``--train_cache`` (a cache of the same teachers with a dev split, e.g. a
pipeline run's ``cache``) gives the dev WERs of the ``weighted`` strategy;
without it ``weighted`` is skipped.

A teacher "alone" is the fusion with all the weight on it: decoded in the
teachers' shared inventory at the coarsest frame shift, so for teachers of
one frame rate it is the model's own greedy WER. The teachers must share
one token inventory (speechkd's own models do).

Usage::

    python benchmarks/bench_fusion.py --manifest data/numbers-small-quickstart/test.csv \\
        --train_cache results/quickstart/1234/cache --out /tmp/fusion \\
        results/quickstart/1234/teachers/tdnn results/quickstart/1234/teachers/conformer
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

from speechkd.distill.cache import PosteriorCache
from speechkd.distill.ensemble import STRATEGIES
from speechkd.distill.teachers import TeacherEnsemble
from speechkd.evaluation import ensemble_error_rates, fused_error_rates, make_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teachers", nargs="+", help="model folders (recipes/ctc/train.py or recipes/distill/train.py)")
    parser.add_argument("--manifest", required=True, help="labelled manifest, e.g. <corpus>/test.csv")
    parser.add_argument("--data_root", default=None, help="$data_root of the manifest (default: its folder)")
    parser.add_argument("--train_cache", default=None, help="a cache of these teachers with dev WERs (for `weighted`)")
    parser.add_argument("--out", required=True, help="folder for the test cache and the wer_*.txt files")
    args = parser.parse_args()

    data_root = args.data_root or os.path.dirname(os.path.abspath(args.manifest))
    ensemble = TeacherEnsemble(args.teachers)
    dev_wer = None
    if args.train_cache:  # the cache's teachers may be in another order than the command line's
        recorded = PosteriorCache.open(args.train_cache).dev_wer or {}
        missing = [name for name in ensemble.teacher_names if name not in recorded]
        if missing:
            raise SystemExit(f"--train_cache {args.train_cache} records no dev WER for {missing}")
        dev_wer = [recorded[name] for name in ensemble.teacher_names]
    dataset = make_dataset(args.manifest, data_root, ensemble.inventory, sort="none")
    strategies = [s for s in STRATEGIES if s != "best"]
    cache, fused = ensemble_error_rates(ensemble, dataset, args.manifest, os.path.join(args.out, "test_cache"),
                                        strategies, dev_wer)
    print(f"{machine_line()}\n{len(dataset)} utterances of {args.manifest}\n")
    print("| system | WER % [95% CI] | CER % |\n|---|---|---|")
    for index, (name, folder) in enumerate(zip(ensemble.teacher_names, args.teachers)):
        alone = fused_error_rates(cache, ensemble.inventory, dataset, "weighted",
                                  strategy_options={"weights": [float(i == index) for i in range(len(args.teachers))]})
        print(f"| {name} ({folder}) | {row(alone)} |")
    for strategy, rates in fused.items():
        rates.write_wer_file(os.path.join(args.out, f"wer_ensemble_{strategy}.txt"))
        print(f"| fused: {strategy} | {row(rates)} |")


def row(rates):
    summary, interval = rates.summary(), rates.intervals()["wer"]
    return f"{summary['wer']:.1f} [{interval['low']:.1f}, {interval['high']:.1f}] | {summary['cer']:.1f}"


if __name__ == "__main__":
    main()
