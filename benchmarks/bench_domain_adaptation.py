#!/usr/bin/env python3
"""Domain-adaptation results table: source model vs T/S adaptation vs oracle, per target domain.

Rows, per target domain (WER on the target-domain test set and on the clean test set):
(a) the source model (trained on clean) as is; (b) the source fine-tuned with CTC
on the few labelled target utterances; (c) unsupervised T/S (alpha = 0);
(d) T/S + the few labels (alpha > 0 on them); (e) conditional T/S (frame level,
alpha = 0); (f) an oracle trained on all target labels. "Gap closed" is
(WER_a - WER_x) / (WER_a - WER_f) on the target test set.

Every run goes through the recipe's YAML (hparams/domain_adaptation/*.yaml) with
overrides, and through the library functions the recipe scripts call.

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

from speechkd.brains.adaptation import finetune_source, train_adaptation
from speechkd.brains.ctc import train_ctc
from speechkd.brains.distill import cache_teachers
from speechkd.data.corpus import build_corpus
from speechkd.experiment import open_experiment

HPARAMS = "hparams/domain_adaptation"
CORPUS_DOMAINS = ["clean", "telephone", "noise", "reverb", "telephone+noise"]
ROWS = {
    "a": "source model as is",
    "b": "source fine-tuned on the few labels",
    "c": "T/S, no labels",
    "d": "T/S + few labels",
    "e": "conditional T/S (frame)",
    "f": "oracle, all target labels",
}


def run_yaml(name, function, overrides):
    """Load ``hparams/domain_adaptation/<name>.yaml`` with overrides, make its folder, run."""
    hparams = open_experiment(os.path.join(HPARAMS, f"{name}.yaml"), overrides)
    start = time.time()
    result = function(hparams, {"device": "cpu", "noprogressbar": True})
    folder = hparams.get("output_folder") or hparams["cache_folder"]
    print(f"  {name} -> {folder} ({time.time() - start:.0f} s)", flush=True)
    return result


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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    domains = args.domains.split(",")
    labels = float(args.labels) if "." in args.labels else int(args.labels)
    started = time.time()
    build_corpus("numbers", args.size, args.data, languages=args.langs.split(","),
                 domains=CORPUS_DOMAINS, progress=False)
    data = {"data_folder": args.data, "corpus_size": args.size, "seed": args.seed,
            "corpus_options": {"domains": CORPUS_DOMAINS}}
    source = os.path.join(args.out, "source")
    tests = [os.path.join(args.data, f"test_{d}.csv") for d in domains] + [os.path.join(args.data, "test.csv")]
    source_results = run_yaml("source", train_ctc, {**data, "output_folder": source, "test_csvs": tests,
                                                    "number_of_epochs": args.source_epochs})
    cache = os.path.join(args.out, "cache")
    run_yaml("cache", cache_teachers, {**data, "teachers": [source], "cache_folder": cache})
    teacher = {"teachers": [source], "cache_folder": cache}
    rows_by_domain = {}
    for domain in domains:
        dom = {**data, "domain": domain, "number_of_epochs": args.adapt_epochs}
        rows = {"a": wers(source_results, domain)}
        rows["b"] = wers(run_yaml("finetune", finetune_source, {
            **dom, "source_folder": source, "target_labels": labels,
            "output_folder": os.path.join(args.out, f"finetune_{domain}")}), domain)
        variants = {"c": {"alpha": 0.0, "target_labels": 0},
                    "d": {"alpha": args.alpha, "target_labels": labels},
                    "e": {"alpha": 0.0, "target_labels": labels, "conditional": "frame"}}
        for key, options in variants.items():
            rows[key] = wers(run_yaml("adapt", train_adaptation, {
                **dom, **teacher, **options,
                "output_folder": os.path.join(args.out, f"{key}_{domain}")}), domain)
        rows["f"] = wers(run_yaml("oracle", train_ctc, {
            **data, "domain": domain, "number_of_epochs": args.source_epochs,
            "output_folder": os.path.join(args.out, f"oracle_{domain}")}), domain)
        rows_by_domain[domain] = dict(sorted(rows.items()))
        print(table({domain: rows_by_domain[domain]}, args), flush=True)
    command = "nice -n 19 python benchmarks/bench_domain_adaptation.py " + " ".join(argv or sys.argv[1:])
    header = (f"Command: `{command.strip()}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPU cores "
              f"(shared, torch threads 1), {platform.python_version()}, torch {torch.__version__}  \n"
              f"Date: {datetime.date.today().isoformat()}; wall time {(time.time() - started) / 60:.1f} min  \n"
              f"Corpus: numbers/{args.size} ({args.langs}); source and oracle {args.source_epochs} epochs, "
              f"adaptation {args.adapt_epochs} epochs; few labels = {labels} of the target train utterances")
    markdown = header + "\n\n" + table(rows_by_domain, args) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as fout:
        fout.write(markdown)
    with open(os.path.join(args.out, "results.json"), "w") as fout:
        json.dump(rows_by_domain, fout, indent=2)
    print(markdown)


if __name__ == "__main__":
    main()
