#!/usr/bin/env python3
"""Greedy against lexicon + bigram decoding for every model of a main-job run.

Decodes the test set (and, with ``--real``, a real-speech manifest) of a
finished ``speechkd run`` twice: greedy, and with
:class:`speechkd.decoding.LexiconDecoder` over the words of the run's
``train.csv`` with their bigram LM. Scores the students, the teachers and the
fused ensemble (from the run's test cache, ``--strategy``), and the
baseline-to-ensemble gap the distilled student closes under each decoding,
with paired-bootstrap 95 % intervals (:func:`speechkd.report.confidence_intervals`).

    python benchmarks/bench_lexicon.py --run results/quickstart/1234 \\
        --data data/numbers-small-quickstart --out results/bench_lexicon \\
        --real ../shared/realspeech-dev/dev.csv
"""

import argparse
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

from speechkd.data.pipelines import make_dataset
from speechkd.distill.cache import PosteriorCache
from speechkd.distill.teachers import TeacherEnsemble
from speechkd.evaluation import evaluate_manifest, fused_error_rates, make_decoder
from speechkd.metrics import wer_file_name
from speechkd.report import confidence_intervals, with_interval

DECODINGS = ("greedy", "lexicon")


def models_of(run):
    """``{name: experiment folder}``: baseline, distilled student, teachers."""
    models = {"baseline": os.path.join(run, "baseline"), "student_kd": os.path.join(run, "distill")}
    for folder in sorted(glob.glob(os.path.join(run, "teachers", "*"))):
        models[os.path.basename(folder)] = folder
    return models


def wer_path(out, name, decoding, set_name):
    return os.path.join(out, name, wer_file_name(set_name, decoding == "lexicon"))


def decode_ensemble(run, teachers, test_csv, data, strategy, lexicon, out):
    """Fused test posteriors of the run's cache, decoded greedy and with the lexicon; the wer files."""
    ensemble = TeacherEnsemble(teachers)
    cache = PosteriorCache.open(os.path.join(run, "evaluate", "test_cache"))
    dev_wer = PosteriorCache.open(os.path.join(run, "cache")).dev_wer_list()
    dataset = make_dataset(test_csv, data, ensemble.inventory, sort="none")
    summaries = {}
    for decoding in DECODINGS:
        decode = make_decoder(ensemble.inventory, lexicon if decoding == "lexicon" else None)
        rates = fused_error_rates(cache, ensemble.inventory, dataset, strategy, dev_wer=dev_wer, decode=decode)
        path = wer_path(out, "ensemble", decoding, "test")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rates.write_wer_file(path)
        summaries[decoding] = {**rates.summary(), "intervals": rates.intervals()}
    return summaries


def cell(rate):
    return "-" if rate["rate"] is None else f"{rate['rate']:.1f} [{rate['low']:.1f}, {rate['high']:.1f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="results/<pipeline>/<seed> of a finished run")
    parser.add_argument("--data", required=True, help="the run's corpus folder (train.csv, test.csv)")
    parser.add_argument("--out", default="results/bench_lexicon")
    parser.add_argument("--strategy", default="weighted", help="fusion strategy of the ensemble row")
    parser.add_argument("--real", help="a real-speech manifest (any rate) to decode too")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    lexicon, test_csv = os.path.join(args.data, "train.csv"), os.path.join(args.data, "test.csv")
    models = models_of(args.run)
    teachers = [folder for name, folder in models.items() if name not in ("baseline", "student_kd")]
    start = time.perf_counter()
    results = {}
    for name, folder in models.items():
        for decoding in DECODINGS:
            for set_name, manifest, root in (("test", test_csv, args.data), ("real", args.real, None)):
                if manifest is None:
                    continue
                results[name, decoding, set_name] = evaluate_manifest(
                    folder, manifest, data_root=root, resample=True, threads=args.threads,
                    output=os.path.join(args.out, name if set_name == "test" else f"{name}-real"),
                    lexicon=lexicon if decoding == "lexicon" else None)
    ensemble = decode_ensemble(args.run, teachers, test_csv, args.data, args.strategy, lexicon, args.out)
    seconds = time.perf_counter() - start

    print(machine_line())
    print(f"Run `{args.run}`, test `{test_csv}`; lexicon and bigram from `{lexicon}`; {seconds:.0f} s.\n")
    sets = ["test"] + (["real"] if args.real else [])
    head = [f"{s} {m} % [95% CI], {d}" for s in sets for m in ("WER", "CER") for d in DECODINGS]
    print("| model | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for name in models:
        cells = [cell(results[name, d, s]["intervals"][m.lower()]) for s in sets for m in ("WER", "CER")
                 for d in DECODINGS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = [cell(ensemble[d]["intervals"][m.lower()]) if s == "test" else "-" for s in sets
             for m in ("WER", "CER") for d in DECODINGS]
    print(f"| ensemble ({args.strategy}) | " + " | ".join(cells) + " |\n")
    for decoding in DECODINGS:
        files = {"baseline": wer_path(args.out, "baseline", decoding, "test"),
                 "student": wer_path(args.out, "student_kd", decoding, "test"),
                 "ensemble": wer_path(args.out, "ensemble", decoding, "test")}
        result = confidence_intervals(files, "baseline", "student", "ensemble")
        gain, closed = result["gain"], result["gap_closed"]
        closed_text = (with_interval(closed["value"], (closed["low"], closed["high"]), 0) + " %"
                       if closed else "- (no gap)")
        print(f"- {decoding}: gain {with_interval(gain['value'], (gain['low'], gain['high']))} WER points, "
              f"gap closed {closed_text} ({result['n_utts']} test utterances, "
              f"{result['n_resamples']} paired resamples)")


if __name__ == "__main__":
    main()
