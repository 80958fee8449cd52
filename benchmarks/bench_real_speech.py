#!/usr/bin/env python3
"""Real-speech ablation: which corpus variant makes a model hear people.

For each named corpus variant (overrides of hparams/common/corpus.yaml keys,
e.g. ``domains``, and whatever keys the corpus builder grows, such as
``corpus_engines`` or ``corpus_augment``: they pass through unchanged), build
the corpus for ``--languages`` only, train one model with ``--recipe``
(recipes/ctc/train.py, ``--epochs``), then evaluate it with
:func:`speechkd.evaluation.evaluate_manifest` on the corpus's synthetic test
set and on the real-speech dev set (resampled to 16 kHz). Prints a markdown
table: variant, synthetic test WER/CER, real-dev WER/CER with 95 % bootstrap
intervals, overall and per language. The dev set is only measured, never
trained on.

    nice python benchmarks/bench_real_speech.py --epochs 10
    python benchmarks/bench_real_speech.py --variants variants.yaml --epochs 15
    python benchmarks/bench_real_speech.py --variant 'clean={domains: [clean]}' \\
        --variant 'telephone={domains: [clean, telephone]}'

A variants YAML maps each name to its overrides::

    espeak-clean: {domains: [clean]}
    espeak-telephone: {domains: [clean, telephone]}
"""

import argparse
import os
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from speechkd.evaluation import evaluate_manifest
from speechkd.pipeline import run_recipe

DEFAULT_VARIANTS = {"espeak-clean": {"domains": ["clean"]}}


def parse_variants(args):
    """Name -> overrides, from ``--variants FILE`` and/or ``--variant NAME=YAML`` (default: espeak, clean)."""
    variants = {}
    if args.variants:
        with open(args.variants) as fin:
            variants.update(yaml.safe_load(fin) or {})
    for item in args.variant:
        name, sep, overrides = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {item!r}: expected NAME=YAML, e.g. 'clean={{domains: [clean]}}'")
        variants[name] = yaml.safe_load(overrides) or {}
    for name, overrides in variants.items():
        if not isinstance(overrides, dict):
            raise SystemExit(f"variant {name!r}: overrides must be a mapping, got {overrides!r}")
    return variants or dict(DEFAULT_VARIANTS)


def train_variant(name, overrides, args):
    """Build the variant's corpus and train one model on it (the recipe prepares the data on main)."""
    data_folder = os.path.join(args.out, "data", name)
    output_folder = os.path.join(args.out, "models", name)
    settings = {"corpus_size": args.size, "corpus_languages": args.languages, **overrides,
                "data_folder": data_folder, "output_folder": output_folder,
                "number_of_epochs": args.epochs, **args.recipe_overrides}
    run_recipe("recipes/ctc/train.py", args.recipe, settings, threads=args.threads,
               stdout=sys.stderr)  # training logs to stderr, the table to stdout
    return data_folder, output_folder


def train_and_evaluate(name, overrides, args):
    """Train the variant, then ``(synthetic, real)``: its evaluation on its corpus's test set and on ``args.real``."""
    data_folder, model_folder = train_variant(name, overrides, args)
    output = os.path.join(model_folder, "evaluate")
    synthetic = evaluate_manifest(model_folder, os.path.join(data_folder, "test.csv"), data_root=data_folder,
                                  threads=args.threads, output=output)
    real = evaluate_manifest(model_folder, args.real, resample=True, threads=args.threads, output=output)
    return synthetic, real


def cell(rate):
    return "-" if rate["rate"] is None else f"{rate['rate']:.1f} [{rate['low']:.1f}, {rate['high']:.1f}]"


def table(rows, langs):
    head = ["variant", "synthetic test WER %", "synthetic test CER %", "real WER % [95 % CI]",
            "real CER % [95 % CI]", *[f"real {lang} {m}" for lang in langs for m in ("WER", "CER")]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, (synthetic, real) in rows.items():
        per_lang = real["intervals"]["per_lang"]
        cells = [name, f"{synthetic['wer']:.1f}", f"{synthetic['cer']:.1f}",
                 cell(real["intervals"]["wer"]), cell(real["intervals"]["cer"])]
        cells += [cell(per_lang[lang][m]) if lang in per_lang else "-" for lang in langs for m in ("wer", "cer")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", help="YAML file: variant name -> corpus.yaml overrides")
    parser.add_argument("--variant", action="append", default=[], help="NAME=YAML overrides (repeatable)")
    parser.add_argument("--recipe", default="hparams/ctc/tdnn.yaml", help="recipes/ctc/train.py YAML")
    parser.add_argument("--recipe_override", action="append", default=[],
                        help="KEY=YAML for the recipe (model size, batch size, ...), repeatable")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", default="small", help="corpus size")
    parser.add_argument("--languages", default="en,es", help="corpus languages (comma-separated)")
    parser.add_argument("--real", default=os.path.join(ROOT, "..", "shared", "realspeech-dev", "dev.csv"),
                        help="real-speech manifest (measured, never trained on)")
    parser.add_argument("--out", default="results/bench_real_speech")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.languages = args.languages.split(",")
    args.recipe_overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.recipe_override)}
    if not os.path.exists(args.real):
        raise SystemExit(f"{args.real}: no real-speech manifest (give --real)")
    variants = parse_variants(args)
    rows, start = {}, time.time()
    for name, overrides in variants.items():
        synthetic, real = rows[name] = train_and_evaluate(name, overrides, args)
        print(f"{name}: synthetic {synthetic['wer']:.1f} % WER, real {real['wer']:.1f} % WER", file=sys.stderr)
    print(f"Recipe `{args.recipe}`, {args.epochs} epochs, corpus `{args.size}` ({','.join(args.languages)}); "
          f"real: `{os.path.relpath(args.real)}` ({next(iter(rows.values()))[1]['n_utts']} files); "
          f"{time.time() - start:.0f} s in all.\n")
    print(table(rows, sorted({lang for _, real in rows.values() for lang in real["intervals"]["per_lang"]})))


if __name__ == "__main__":
    main()
