"""A teacher coarser than the student: its frames repeated (speechkd.distill.align.frame_factors).

Two TDNN teachers identical but for their output frame shift (subsampling 2:
20 ms, as the student; subsampling 4: 40 ms, coarser) are trained on the
same corpus; each is cached and distilled into the same 20 ms streaming
student (α = 0.5, average fusion of the one teacher, targets delayed 2
frames). The 40 ms teacher's target reaches the student with every frame
repeated twice. Also: the student trained alone (CTC).

Prints each teacher's and student's test WER and the paired-bootstrap 95 %
interval of the students' difference.

Usage::

    nice python benchmarks/bench_coarse_teacher.py [--languages en,de] [--teacher-epochs 10] [--student-epochs 15]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import machine_line

from speechkd.metrics import paired_bootstrap_wer, read_utterance_errors
from speechkd.stages import library_env


def run(script, hparams, **overrides):
    command = [sys.executable, str(REPO / "recipes" / script), str(REPO / "hparams" / hparams),
               *(f"--{key}={value}" for key, value in overrides.items())]
    env = {**library_env(), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=REPO, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_wer(folder):
    with open(os.path.join(folder, "results.json")) as fin:
        return json.load(fin)["sets"]["test"]["wer"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", default="en,de")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--out", default="/tmp/bench-coarse")
    args = parser.parse_args()
    corpus = {"data_folder": os.path.join(args.out, "data"), "corpus_languages": f"[{args.languages}]"}

    rows, students = [], {}
    for shift, subsampling in ((20, 2), (40, 4)):
        teacher = os.path.join(args.out, f"tdnn{shift}")
        run("ctc/train.py", "ctc/tdnn.yaml", **corpus, output_folder=teacher, subsampling=subsampling,
            number_of_epochs=args.teacher_epochs, name=f"tdnn{shift}")
        cache = os.path.join(args.out, f"cache{shift}")
        run("distill/cache_teachers.py", "distill/cache.yaml", **corpus, teachers=f"[{teacher}]", cache_folder=cache)
        student = os.path.join(args.out, f"student_from{shift}")
        run("distill/train.py", "distill/student.yaml", **corpus, teachers=f"[{teacher}]", cache_folder=cache,
            output_folder=student, number_of_epochs=args.student_epochs, strategy="average", teacher_delay=2)
        rows.append((f"TDNN teacher, {shift} ms", test_wer(teacher), ""))
        students[shift] = student
    alone = os.path.join(args.out, "student_alone")
    run("ctc/train.py", "ctc/student.yaml", **corpus, output_folder=alone, number_of_epochs=args.student_epochs)

    errors = {shift: read_utterance_errors(os.path.join(folder, "wer_test.txt")) for shift, folder in students.items()}
    diff = paired_bootstrap_wer(errors[20], errors[40])
    rows += [("student alone (CTC)", test_wer(alone), ""),
             ("student from the 20 ms teacher", test_wer(students[20]), ""),
             ("student from the 40 ms teacher (frames repeated x2)", test_wer(students[40]),
              f"{diff['difference']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]")]
    print(f"`nice python benchmarks/bench_coarse_teacher.py --languages {args.languages} --teacher-epochs "
          f"{args.teacher_epochs} --student-epochs {args.student_epochs}`; {machine_line()}; {datetime.date.today()}\n")
    print("| model (20 ms student unless said) | test WER % | vs student from the 20 ms teacher (95 % CI) |")
    print("|---|---|---|")
    for name, wer, versus in rows:
        print(f"| {name} | {wer:.1f} | {versus} |")


if __name__ == "__main__":
    main()
