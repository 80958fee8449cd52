#!/usr/bin/env python3
"""Domain-adaptation results table: source model vs T/S adaptation vs oracle, per target domain.

Rows, per target domain (WER on the target-domain test set and on the clean test set):
(a) the source model (trained on clean) as is; (b) the source fine-tuned with CTC
on the few labelled target utterances; (c) unsupervised T/S (alpha = 0);
(d) T/S + the few labels (alpha > 0 on them); (e) conditional T/S (frame level,
alpha = 0); (f) an oracle trained on all target labels; (g) and (h) the small
causal streaming student (hparams/domain_adaptation/adapt_small.yaml) adapted by
unsupervised T/S with teacher targets not delayed and delayed by 2 frames. "Gap
closed" is (WER_a - WER_x) / (WER_a - WER_f) on the target test set. Below the
table: WER(h) - WER(g) on the target test with a 95 % paired bootstrap interval
over utterances.

Every run is a recipe script (recipes/ctc/train.py, recipes/distill/cache_teachers.py,
recipes/domain_adaptation/{train,finetune}.py) run as a user would, on its YAML
(hparams/domain_adaptation/*.yaml) with overrides.

    nice -n 19 python benchmarks/bench_domain_adaptation.py --domains telephone,noise
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch

from speechkd.metrics import paired_bootstrap_wer, read_utterance_errors
from speechkd.pipeline import run_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DOMAINS = ["clean", "telephone", "noise", "reverb", "telephone+noise"]
ROWS = {
    "a": "source model as is",
    "b": "source fine-tuned on the few labels",
    "c": "T/S, no labels",
    "d": "T/S + few labels",
    "e": "conditional T/S (frame)",
    "f": "oracle, all target labels",
    "g": "causal small student, T/S, no labels, teacher_delay 0",
    "h": "causal small student, T/S, no labels, teacher_delay 2",
}


def run_yaml(script, name, overrides):
    """``python recipes/<script> hparams/domain_adaptation/<name>.yaml --key=value ...``; its results.json."""
    start = time.time()
    run_recipe(os.path.join(ROOT, "recipes", script),
               os.path.join(ROOT, "hparams", "domain_adaptation", f"{name}.yaml"),
               {**overrides, "device": "cpu"})
    folder = overrides.get("output_folder") or overrides["cache_folder"]
    print(f"  {name} -> {folder} ({time.time() - start:.0f} s)", flush=True)
    results = os.path.join(folder, "results.json")
    if not os.path.exists(results):
        return None
    with open(results) as fin:
        return json.load(fin)


def wers(results, domain):
    sets = results["sets"]
    return sets[f"test_{domain}"]["wer"], sets["test"]["wer"]


def table(rows_by_domain, args):
    lines = [
        "| target domain | system | WER target test | WER clean test | gap (a)→(f) closed |",
        "|---|---|---:|---:|---:|",
    ]
    for domain, rows in rows_by_domain.items():
        gap = rows["a"][0] - rows["f"][0]
        for key, (target, clean) in rows.items():
            closed = 100.0 * (rows["a"][0] - target) / gap if abs(gap) > 1e-9 else float("nan")
            lines.append(f"| {domain} | ({key}) {ROWS[key]} | {target:.1f} | {clean:.1f} | {closed:.0f}% |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", default="telephone", help="comma-separated target domains")
    parser.add_argument("--langs", default="en", help="languages of the numbers corpus")
    parser.add_argument("--size", default="small")
    parser.add_argument("--data", default="data/numbers-small-en2")
    parser.add_argument("--out", default="results/domain_adaptation/bench")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--source-epochs", type=int, default=15)
    parser.add_argument("--adapt-epochs", type=int, default=6)
    parser.add_argument("--labels", default="0.2", help="few target labels: count or fraction")
    parser.add_argument("--alpha", type=float, default=0.5, help="CTC weight of row (d)")
    parser.add_argument("--small-epochs", type=int, default=20, help="epochs of the causal student, rows (g), (h)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    domains = args.domains.split(",")
    labels = float(args.labels) if "." in args.labels else int(args.labels)
    started = time.time()
    data = {"data_folder": args.data, "corpus_size": args.size, "corpus_languages": args.langs.split(","),
            "domains": CORPUS_DOMAINS, "seed": args.seed}
    source = os.path.join(args.out, "source")
    tests = [os.path.join(args.data, f"test_{d}.csv") for d in domains] + [os.path.join(args.data, "test.csv")]
    source_results = run_yaml("ctc/train.py", "source", {**data, "output_folder": source, "test_csvs": tests,
                                                         "number_of_epochs": args.source_epochs})
    cache = os.path.join(args.out, "cache")
    run_yaml("distill/cache_teachers.py", "cache", {**data, "teachers": [source], "cache_folder": cache})
    teacher = {"teachers": [source], "cache_folder": cache}
    rows_by_domain, delays = {}, {}
    for domain in domains:
        dom = {**data, "domain": domain, "number_of_epochs": args.adapt_epochs}
        rows = {"a": wers(source_results, domain)}
        rows["b"] = wers(run_yaml("domain_adaptation/finetune.py", "finetune", {
            **dom, "source_folder": source, "target_labels": labels,
            "output_folder": os.path.join(args.out, f"finetune_{domain}")}), domain)
        variants = {"c": {"alpha": 0.0, "target_labels": 0},
                    "d": {"alpha": args.alpha, "target_labels": labels},
                    "e": {"alpha": 0.0, "target_labels": labels, "conditional": "frame"}}
        for key, options in variants.items():
            rows[key] = wers(run_yaml("domain_adaptation/train.py", "adapt", {
                **dom, **teacher, **options,
                "output_folder": os.path.join(args.out, f"{key}_{domain}")}), domain)
        rows["f"] = wers(run_yaml("ctc/train.py", "oracle", {
            **data, "domain": domain, "number_of_epochs": args.source_epochs,
            "output_folder": os.path.join(args.out, f"oracle_{domain}")}), domain)
        for key, delay in (("g", 0), ("h", 2)):
            rows[key] = wers(run_yaml("domain_adaptation/train.py", "adapt_small", {
                **dom, **teacher, "teacher_delay": delay, "number_of_epochs": args.small_epochs,
                "output_folder": os.path.join(args.out, f"{key}_{domain}")}), domain)
        delays[domain] = paired_bootstrap_wer(
            *(read_utterance_errors(os.path.join(args.out, f"{key}_{domain}", f"wer_test_{domain}.txt"))
              for key in ("g", "h")))
        rows_by_domain[domain] = dict(sorted(rows.items()))
        print(table({domain: rows_by_domain[domain]}, args), flush=True)
    command = "nice -n 19 python benchmarks/bench_domain_adaptation.py " + " ".join(argv or sys.argv[1:])
    header = (f"Command: `{command.strip()}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPU cores "
              f"(shared, torch threads 1), {platform.python_version()}, torch {torch.__version__}  \n"
              f"Date: {datetime.date.today().isoformat()}; wall time {(time.time() - started) / 60:.1f} min  \n"
              f"Corpus: numbers/{args.size} ({args.langs}); source and oracle {args.source_epochs} epochs, "
              f"adaptation {args.adapt_epochs} epochs; few labels = {labels} of the target train utterances")
    effect = "\n".join(
        f"- {domain}: teacher_delay 2 vs 0 for the causal student, target-test WER {d['difference']:+.1f} points "
        f"(95 % CI {d['low']:+.1f} to {d['high']:+.1f}, paired bootstrap over {d['n_utts']} utterances)"
        for domain, d in delays.items())
    markdown = header + "\n\n" + table(rows_by_domain, args) + "\n\n" + effect + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as fout:
        fout.write(markdown)
    with open(os.path.join(args.out, "results.json"), "w") as fout:
        json.dump({"rows": rows_by_domain, "teacher_delay_effect": delays}, fout, indent=2)
    print(markdown)


if __name__ == "__main__":
    main()
