#!/usr/bin/env python3
"""Low-resource recipe benchmark: the issue's results table for several labelled-minute budgets.

Runs the recipe scripts (recipes/ctc/train.py for the teachers and the
scratch baseline, recipes/low_resource/* for the rest) in this process
(torch on one thread), in the current folder (``data/``, ``results/``), on a
`numbers` corpus with ru, de (the pool) and uk (the target), small models and
modest epochs, then prints a markdown table of target test WER/CER and
parameters for (a) the student from scratch, (b) each adapted teacher,
(c) the adapted ensemble, (d) the student distilled on labelled audio only,
(e) on labelled + unlabelled, (f) with the agreement filter.

    python benchmarks/bench_low_resource.py --minutes 1 5 15 > results/bench_low_resource.md
"""

import argparse
import contextlib
import json
import platform
import runpy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {
    "conformer": ["--d_model=64", "--num_layers=2", "--nhead=4", "--d_ffn=128", "--conv_channels=16"],
    "crdnn": ["--cnn_channels=[16, 16]", "--rnn_layers=1", "--rnn_neurons=96", "--dnn_neurons=96"],
    "tdnn": ["--channels=96", "--dilations=[1, 2, 4, 1]", "--teacher_languages=[ru]"],
}
STUDENT = ["--conv_channels=32", "--conv_layers=2", "--gru_hidden=48"]


def run(script, hparams, *overrides):
    """``python recipes/<script> hparams/low_resource/<hparams> --key=value ...``, in this process."""
    argv = [str(ROOT / "recipes" / script), str(ROOT / "hparams/low_resource" / hparams),
            *overrides, "--device=cpu", "--noprogressbar"]
    previous, sys.argv = sys.argv, argv
    try:
        with contextlib.redirect_stdout(sys.stderr):  # training logs to stderr, the table to stdout
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = previous


def results(folder):
    return json.loads((Path(folder) / "results.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5])
    parser.add_argument("--size", default="small", help="corpus size (tiny: a smoke test)")
    parser.add_argument("--unlabelled", type=float, default=20.0)
    parser.add_argument("--teacher_epochs", type=int, default=8)
    parser.add_argument("--adapt_epochs", type=int, default=6)
    parser.add_argument("--student_epochs", type=int, default=10)
    parser.add_argument("--filter_cer", type=float, default=25.0, help="teacher-to-teacher CER kept (%%)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    data = [f"--corpus_size={args.size}", "--corpus_languages=[ru, de, uk]", f"--corpus_target_minutes={max(args.minutes):g}",
            f"--unlabelled_minutes={args.unlabelled:g}"]
    rows = []
    for i, minutes in enumerate(args.minutes):
        common = [*data, f"--target_minutes={minutes:g}"]
        exp = f"results/low_resource/uk-{minutes:g}min"
        if i == 0:
            for name, sizes in TEACHERS.items():
                run("ctc/train.py", f"teacher_{name}.yaml", *common, *sizes,
                    f"--number_of_epochs={args.teacher_epochs}")
        for name in TEACHERS:
            run("low_resource/adapt_teacher.py", "adapt.yaml", *common, f"--teacher_name={name}",
                f"--number_of_epochs={args.adapt_epochs}")
        run("low_resource/cache_teachers.py", "cache.yaml", *common)
        student = [*common, *STUDENT, f"--number_of_epochs={args.student_epochs}"]
        run("ctc/train.py", "scratch.yaml", *student)
        run("low_resource/train_student.py", "student.yaml", *student, "--use_unlabelled=False",
            "--name=kd_labelled")
        run("low_resource/train_student.py", "student.yaml", *student, "--name=kd_unlabelled")
        run("low_resource/train_student.py", "student.yaml", *student, "--name=kd_filtered",
            "--agreement_filter=teacher_cer", f"--agreement_threshold={args.filter_cer:g}")
        systems = [("(a) student from scratch", "student_scratch", "")]
        systems += [(f"(b) adapted {n}", f"adapted_{n}", "") for n in TEACHERS]
        systems += [("(c) adapted ensemble (average)", "ensemble", ""),
                    ("(d) student KD, labelled only", "kd_labelled", ""),
                    ("(e) student KD, labelled + unlabelled", "kd_unlabelled", ""),
                    ("(f) (e) + agreement filter", "kd_filtered", "")]
        scratch_wer = results(f"{exp}/student_scratch/1234")["sets"]["target_test"]["wer"]
        for label, name, _ in systems:
            res = results(f"{exp}/{name}/1234")
            test = res["sets"]["target_test"]
            note = ""
            if "unlabelled" in res and res["unlabelled"]["method"]:
                u = res["unlabelled"]
                note = f"kept {u['kept']}/{u['offered']} unlabelled ({100 * u['kept_share']:.0f}%)"
            elif "added_tokens" in res:
                note = "added " + " ".join(res["added_tokens"])
            rel = "" if name in ("student_scratch",) else f"{100 * (test['wer'] - scratch_wer) / max(scratch_wer, 1e-9):+.1f}%"
            rows.append(f"| {minutes:g} | {label} | {test['wer']:.1f} | {test['cer']:.1f} | {rel} | "
                        f"{res['params'] / 1e3:.0f}k | {note} |")
        print(f"[{minutes:g} min done after {time.time() - start:.0f} s]", file=sys.stderr)
    print(f"Command: `python benchmarks/bench_low_resource.py {' '.join(sys.argv[1:])}` "
          f"(size {args.size}, teacher/adapt/student epochs "
          f"{args.teacher_epochs}/{args.adapt_epochs}/{args.student_epochs}, unlabelled {args.unlabelled:g} min, "
          f"filter: teacher CER <= {args.filter_cer:g}%)  ")
    print(f"Machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"1 thread, 2 shared cores; wall {time.time() - start:.0f} s; "
          f"date {time.strftime('%Y-%m-%d')}\n")
    print("| labelled min | system | test WER % | test CER % | WER vs (a) | params | note |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
