"""Students against one baseline and one ensemble (or teacher), each with paired-bootstrap 95 % intervals.

Each argument is an experiment folder holding ``wer_test.txt`` (or a
``wer_*.txt`` file itself). Prints per student its test WER and CER with
their intervals, the gain over the baseline and the share of the
baseline-to-ensemble gap closed with theirs (:func:`speechkd.report.confidence_intervals`:
the same resampled test utterances score all three systems), its epochs and
median seconds per epoch. Folders joined by commas are one system's runs over
seeds (the baseline's and each student's in the same seed order): their errors are
pooled (:func:`speechkd.report.pooled_errors`), the epochs and seconds are the first's.

Usage::

    python benchmarks/compare_students.py --baseline /tmp/kd/base-12 --ensemble /tmp/kd/teacher_wer_test.txt \\
        /tmp/kd/kd-12 /tmp/kd/kdU-6 /tmp/kd/kdU-12
    python benchmarks/compare_students.py --baseline /tmp/c-1234,/tmp/c-2024 --ensemble ... /tmp/s-1234,/tmp/s-2024
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_quickstart_seeds import seconds_per_epoch
from machine import machine_line

from speechkd.report import confidence_intervals, parse_train_log, with_interval


def wer_files(spec):
    """The ``wer_test.txt`` of each comma-separated folder (or file) of ``spec``, a list of one or more."""
    return [wer_file(path) for path in spec.split(",")]


def wer_file(path):
    """``path`` itself when it is a file, else its folder's ``wer_test.txt``; exits naming it when absent."""
    found = path if os.path.isfile(path) else os.path.join(path, "wer_test.txt")
    if not os.path.isfile(found):
        sys.exit(f"compare_students: error: {found} does not exist (is the run finished and tested?)")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--ensemble", required=True, help="the target the gap is measured to")
    parser.add_argument("students", nargs="+")
    args = parser.parse_args()
    baseline, ensemble = wer_files(args.baseline), wer_file(args.ensemble)
    students = {student: wer_files(student) for student in args.students}  # every file found before the table
    for student, files in students.items():
        if len(files) != len(baseline):
            sys.exit(f"compare_students: error: {student} has {len(files)} runs, the baseline {len(baseline)}: "
                     "pooled systems need one run per seed each")
    print(machine_line())
    print("| student | epochs | s/epoch | test WER % [95% CI] | CER % [95% CI] | gain, WER points | gap closed % |")
    print("|---|---:|---:|---|---|---|---|")
    for student, student_file in students.items():
        files = {"baseline": baseline, "student": student_file, "ensemble": ensemble}
        result = confidence_intervals(files, "baseline", "student", "ensemble")
        gain, closed = result["gain"], result["gap_closed"]
        runs = student.split(",")
        log = os.path.join(runs[0], "train_log.txt")
        epochs = len(parse_train_log(log)) if os.path.exists(log) else "-"
        name = ", ".join(os.path.basename(path.rstrip("/")) for path in runs)
        print(f"| {name} | {epochs} | {seconds_per_epoch(runs[0]) or 0:.1f} | "
              f"{with_interval(result['rates']['student'], result['wer']['student'])} | "
              f"{with_interval(result['cer_rates']['student'], result['cer']['student'])} | "
              f"{with_interval(gain['value'], (gain['low'], gain['high']))} | "
              + (f"{with_interval(closed['value'], (closed['low'], closed['high']), 0)} |" if closed else "- |"))
    for name in ("baseline", "ensemble"):
        print(f"- {name} {args.__dict__[name]}: {with_interval(result['rates'][name], result['wer'][name])} % WER "
              f"({result['n_utts']} test utterances, {result['n_resamples']} paired resamples)")


if __name__ == "__main__":
    main()
