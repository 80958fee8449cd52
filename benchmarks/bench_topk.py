"""Cache size per hour of audio and the distilled student's WER for several top-k.

Takes a finished quickstart run (its teachers and its distillation settings),
caches the teachers again with each k, distils the same student from each
cache (two at a time, one thread each), and prints cache MB per hour of
cached audio and the student's test WER/CER next to the run's own k.

    python benchmarks/bench_topk.py --run results/quickstart/1234 --ks 0 32
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def folder_megabytes(folder):
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".npy"))
    return total / 1e6


def cached_hours(cache_folder):
    from speechkd.data.manifest import read_manifest
    from speechkd.distill.cache import PosteriorCache

    cache = PosteriorCache.open(cache_folder)
    with open(os.path.join(cache_folder, "meta.json")) as fin:
        data = json.load(fin)["features"]["data_folder"]
    seconds = sum(float(row["duration"]) for split in ("train", "dev")
                  for row in read_manifest(os.path.join(data, f"{split}.csv")) if row["ID"] in cache)
    return seconds / 3600


def test_scores(folder):
    with open(os.path.join(folder, "results.json")) as fin:
        test = json.load(fin)["sets"]["test"]
    return test["wer"], test["cer"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--out", default=None, help="where the extra caches and students go")
    args = parser.parse_args()
    out = args.out or os.path.join(args.run, "bench_topk")
    hyper = os.path.join(args.run, "distill", "hyperparams.yaml")
    with open(os.path.join(args.run, "cache", "meta.json")) as fin:
        run_k = json.load(fin)["k"]
    teachers = "[" + ",".join(os.path.join(args.run, "teachers", t)
                              for t in sorted(os.listdir(os.path.join(args.run, "teachers")))) + "]"
    from hyperpyyaml import load_hyperpyyaml

    with open(hyper) as fin:
        hp = load_hyperpyyaml(fin)
    common = [f"--data_folder={hp['data_folder']}", f"--corpus_size={hp['corpus_size']}",
              f"--teachers={teachers}", f"--seed={hp['seed']}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in args.ks:  # caches one after the other (they read the same audio)
        subprocess.run([sys.executable, "recipes/distill/cache_teachers.py", "hparams/distill/cache.yaml",
                        *common, f"--top_k={k}", f"--cache_folder={out}/cache_k{k}"],
                       cwd=REPO, env=env, check=True, capture_output=True)
    students = []
    for k in args.ks:
        command = [sys.executable, "recipes/distill/train.py", "hparams/distill/student.yaml", *common,
                   f"--top_k={k}", f"--cache_folder={out}/cache_k{k}", f"--output_folder={out}/student_k{k}"]
        for key in ("alpha", "temperature", "strategy", "teacher_delay", "number_of_epochs"):
            command.append(f"--{key}={hp[key]}")
        students.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        if len(students) == 2:
            students.pop(0).wait()
    for proc in students:
        proc.wait()

    rows = [(run_k, os.path.join(args.run, "cache"), os.path.join(args.run, "distill"))]
    rows += [(k, f"{out}/cache_k{k}", f"{out}/student_k{k}") for k in args.ks]
    print(f"Command: `python benchmarks/bench_topk.py --run {args.run} --ks {' '.join(map(str, args.ks))}`  ")
    print(f"Date: {datetime.date.today()}; teachers and distillation settings of {args.run} "
          f"(strategy {hp['strategy']}, alpha {hp['alpha']}, tau {hp['temperature']}, "
          f"{hp['number_of_epochs']} epochs)\n")
    print("| k | cache MB per hour of audio | student test WER % | student test CER % |")
    print("|---|---:|---:|---:|")
    for k, cache, student in sorted(rows, key=lambda r: (r[0] != 0, -r[0])):
        wer, cer = test_scores(student)
        per_hour = folder_megabytes(cache) / cached_hours(cache)
        print(f"| {'full' if k == 0 else k} | {per_hour:.1f} | {wer:.1f} | {cer:.1f} |")


if __name__ == "__main__":
    main()
