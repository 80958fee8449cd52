"""The main job's two students rerun with other seeds (and levers) on one run's teachers and cache.

Reads a finished (or at least cached) ``speechkd run`` folder: its teachers,
its posterior cache and its evaluate stage's fused-ensemble ``wer_test``
file. For each seed it trains the ``baseline`` and ``distill`` stages'
recipes exactly as the pipeline launches them (same scripts, YAMLs,
overrides and processes, from :class:`speechkd.pipeline.Pipeline`), with only
``seed`` and ``output_folder`` changed (and, with ``distill_from_baseline``,
the distilled student starting from that seed's baseline), one recipe at a time; then prints each student's
test WER with its 95 % bootstrap interval, the gain (baseline minus
distilled) and the gap closed with their paired-bootstrap intervals
(:func:`speechkd.report.confidence_intervals`), and each run's wall time
and seconds per epoch; with two seeds or more, the gain and the gap closed
pooled over them (each system's errors summed over its seeds) and the
per-seed gains' spread.

A run folder that already holds a ``wer_test.txt`` is reused (rerunning the
script only trains what is missing; ``--reuse distill:1234=FOLDER`` names an
existing one). Unknown options are pipeline overrides that shape the stages
as in ``speechkd run`` (e.g. ``--corpus_unlabelled_minutes=0``); ``--set
STAGE.KEY=VALUE`` changes one recipe override (a lever), e.g.
``--set distill.alpha=0.2`` or ``--set distill.number_of_epochs=15``.

Usage::

    nice python benchmarks/bench_quickstart_seeds.py hparams/pipelines/quickstart.yaml \\
        --run results/quickstart/1234 --seeds 1234 2024 --out /tmp/bench-seeds
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import re
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import machine_line

from speechkd.experiment import load_hparams
from speechkd.pipeline import Pipeline, parse_overrides, run_recipe
from speechkd.report import confidence_intervals, parse_train_log, with_interval

STUDENT_STAGES = {"baseline": "baseline", "distill": "student_kd"}


def stage_runs(pipeline_file, run_folder, pipeline_overrides, settings):
    """Stage name -> ``(script, hparams file, overrides, threads, nproc)`` as the pipeline launches it."""
    hparams, _ = load_hparams(pipeline_file, {**parse_overrides(pipeline_overrides), "output_folder": run_folder})
    pipeline = Pipeline(hparams)
    specs = {"baseline": hparams["student"], "distill": hparams["distill"]}
    runs = {}
    for stage in pipeline.stages():
        if stage.name in STUDENT_STAGES:
            overrides = {**stage.config["overrides"], **settings.get(stage.name, {})}
            runs[stage.name] = (stage.config["script"], specs[stage.name]["hparams"], overrides, stage.config["threads"],
                                stage.config.get("nproc", 1))
    return runs, hparams["strategy"]


def parse_settings(items):
    """``["distill.alpha=0.2"]`` -> ``{"distill": {"alpha": 0.2}}`` (values parsed as YAML)."""
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        stage, _, name = key.partition(".")
        if stage not in STUDENT_STAGES or not name:
            raise SystemExit(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE one of {list(STUDENT_STAGES)}")
        settings.setdefault(stage, {})[name] = yaml.safe_load(value)
    return settings


def seconds_per_epoch(folder):
    """Median wall seconds between consecutive end-of-epoch lines of ``log.txt`` (training + validation)."""
    stamps = []
    with open(os.path.join(folder, "log.txt")) as fin:
        for line in fin:
            if "train_logger" in line and "epoch:" in line:
                clock = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                stamps.append(clock.timestamp())
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return gaps[len(gaps) // 2] if gaps else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", help="the pipeline YAML of the run, e.g. hparams/pipelines/quickstart.yaml")
    parser.add_argument("--run", required=True, help="the run folder whose teachers, cache and evaluate stage to use")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 2024])
    parser.add_argument("--stages", nargs="+", default=list(STUDENT_STAGES), choices=list(STUDENT_STAGES))
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", dest="settings")
    parser.add_argument("--out", default="/tmp/bench-quickstart-seeds")
    parser.add_argument("--reuse", action="append", default=[], metavar="STAGE:SEED=FOLDER",
                        help="an experiment folder that already is that stage's run for that seed")
    args, pipeline_overrides = parser.parse_known_args()
    runs, strategy = stage_runs(args.pipeline, args.run, pipeline_overrides, parse_settings(args.settings))
    ensemble_file = os.path.join(args.run, "evaluate", f"wer_test_ensemble_{strategy}.txt")
    reused = {}
    for item in args.reuse:
        key, _, folder = item.partition("=")
        stage, _, seed = key.partition(":")
        reused[(stage, int(seed))] = folder

    print(f"{machine_line()}\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"run {args.run}; pipeline overrides {pipeline_overrides}; settings {args.settings}\n")
    folders, walls = {}, {}
    for seed in args.seeds:
        for stage in STUDENT_STAGES:
            folder = reused.get((stage, seed), os.path.join(args.out, f"{stage}-{seed}"))
            done = os.path.exists(os.path.join(folder, "wer_test.txt"))
            folders[stage, seed] = folder if done or stage in args.stages else None
            if done or stage not in args.stages:
                continue
            script, hparams_file, overrides, threads, nproc = runs[stage]
            overrides = {**overrides, "seed": seed, "output_folder": folder}
            if "init_from" in overrides:  # distill_from_baseline: this seed's student continues this seed's baseline
                if folders.get(("baseline", seed)) is None:
                    raise SystemExit(f"the distilled student of seed {seed} continues its baseline: train it "
                                     f"(--stages baseline distill) or name it (--reuse baseline:{seed}=FOLDER)")
                overrides["init_from"] = folders["baseline", seed]
            start = time.time()
            run_recipe(script, hparams_file, overrides, threads, nproc)
            walls[stage, seed] = time.time() - start

    print("| seed | system | test WER % [95% CI] | epochs | s/epoch | wall s |")
    print("|---|---|---|---|---|---|")
    summaries, paired = [], {}  # paired: seed -> its own gain
    for seed in args.seeds:
        files = {STUDENT_STAGES[s]: os.path.join(folders[s, seed], "wer_test.txt")
                 for s in STUDENT_STAGES if folders.get((s, seed))}
        if len(files) < 2:
            continue
        files[f"ensemble ({strategy})"] = ensemble_file
        result = confidence_intervals(files, "baseline", "student_kd", f"ensemble ({strategy})")
        for stage, name in STUDENT_STAGES.items():
            folder = folders[stage, seed]
            wer = read_wer(os.path.join(folder, "wer_test.txt"))
            wall = walls.get((stage, seed))
            print(f"| {seed} | {name} | {with_interval(wer, result['wer'][name])} | "
                  f"{len(parse_train_log(os.path.join(folder, 'train_log.txt')))} | "
                  f"{seconds_per_epoch(folder) or 0:.1f} | {f'{wall:.0f}' if wall else 'reused'} |")
        gain, closed = result["gain"], result["gap_closed"]
        ensemble = f"ensemble ({strategy})"
        summaries.append(f"- seed {seed}: gain {with_interval(gain['value'], (gain['low'], gain['high']))} WER points; "
                         f"gap closed {with_interval(closed['value'], (closed['low'], closed['high']), 0)} % "
                         f"of the gap to the {ensemble} at {with_interval(result['rates'][ensemble], result['wer'][ensemble])} "
                         f"({result['n_utts']} test utterances, {result['n_resamples']} paired resamples)"
                         if closed else f"- seed {seed}: no gap to close")
        paired[seed] = gain["value"]
    if len(paired) > 1:
        summaries.append(pooled_summary(folders, paired, ensemble_file, strategy))
    print("\n" + "\n".join(summaries))


def pooled_summary(folders, seed_gains, ensemble_file, strategy):
    """The line of the gain and gap closed pooled over the seeds of ``seed_gains`` (seed -> that seed's gain).

    A seed moves one student's WER by more than distillation does (twelve seeds of the TDNN
    student alone: standard deviation 3.6 points), so one seed's gain says little; pooled, each
    system's errors are summed over its seeds and the same resampled utterances score all.
    """
    ensemble = f"ensemble ({strategy})"
    seeds, gains = list(seed_gains), list(seed_gains.values())
    files = {name: [os.path.join(folders[stage, seed], "wer_test.txt") for seed in seeds]
             for stage, name in STUDENT_STAGES.items()}
    result = confidence_intervals({**files, ensemble: ensemble_file}, "baseline", "student_kd", ensemble)
    gain, closed, rates = result["gain"], result["gap_closed"], result["rates"]
    text = (f"- pooled over seeds {', '.join(map(str, seeds))}: baseline {rates['baseline']:.1f}, "
            f"distilled {rates['student_kd']:.1f} % WER; gain "
            f"{with_interval(gain['value'], (gain['low'], gain['high']))} WER points")
    if closed:
        text += f", gap closed {with_interval(closed['value'], (closed['low'], closed['high']), 0)} %"
    return (text + f" (the interval: utterances resampled, not seeds; per-seed gains "
            f"{', '.join(f'{g:.1f}' for g in gains)}, standard deviation {statistics.stdev(gains):.1f})")


def read_wer(path):
    """The WER on the first line of a ``wer_<set>.txt``."""
    with open(path) as fin:
        return float(re.match(r"%WER ([\d.]+)", fin.readline()).group(1))


if __name__ == "__main__":
    main()
