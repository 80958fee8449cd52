"""Time of one training step: plain CTC student vs cached KD vs online KD.

Runs the same batches of a corpus through one optimizer step of the student
with (1) the CTC loss alone, (2) the KD loss reading the teachers from the
posterior cache, (3) the KD loss running the teachers in the step. Prints the
median step time of each and the ratios to plain CTC, measured in one run.

    python benchmarks/bench_kd_step.py --run results/quickstart/1234 --data data/numbers-small

(``--run`` is a finished ``speechkd run`` folder: its teachers, cache and
distilled student are used; the objective is α·CTC + (1 − α)·KL at α = 0.3,
τ = 1, averaged teachers.)
"""

import argparse
import datetime
import os
import statistics
import time

import speechbrain as sb
import torch
from machine import cpu_model

from speechkd.data.pipelines import make_dataset
from speechkd.distill import (
    CTCTerm,
    Objective,
    ObjectiveBatch,
    PosteriorCache,
    PosteriorKL,
    TeacherEnsemble,
    TeacherTarget,
)
from speechkd.experiment import load_model, model_name

ALPHA = 0.3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="finished pipeline output folder")
    parser.add_argument("--data", required=True, help="corpus folder")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teachers = sorted(os.listdir(os.path.join(args.run, "teachers")))
    folders = {model_name(os.path.join(args.run, "teachers", t)): os.path.join(args.run, "teachers", t)
               for t in teachers}
    cache = PosteriorCache.open(os.path.join(args.run, "cache"))
    # online teachers give the same top-k, fp16-rounded batches as the cache (k = the cache's)
    ensemble = TeacherEnsemble([folders[name] for name in cache.teacher_names], k=cache.k)
    student, inventory = load_model(os.path.join(args.run, "distill"))
    student.train()
    ctc = Objective({"ctc": CTCTerm()})
    kd = Objective({"ctc": CTCTerm(), "kd": PosteriorKL()}, {"ctc": ALPHA, "kd": 1.0 - ALPHA})
    target = TeacherTarget(cache, inventory.symbols, student.frame_shift_ms)
    dataset = make_dataset(os.path.join(args.data, "train.csv"), args.data, inventory, sort="none")
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

    def step(batch, mode):
        wavs, lens = batch.sig
        tokens, token_lens = batch.tokens
        start = time.perf_counter()
        log_probs = student(wavs, lens)
        if mode == "ctc":
            loss = ctc(ObjectiveBatch(log_probs, lens, tokens, token_lens))["loss"]
        else:
            teacher = cache.teacher_batch(batch) if mode == "cached" else ensemble.teacher_batch(batch)
            kd_batch = ObjectiveBatch(log_probs, lens, tokens, token_lens, teacher=teacher, target=target)
            loss = kd(kd_batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    times = {"ctc": [], "cached": [], "online": []}
    for index, batch in enumerate(loader):
        if index == args.batches + 2:
            break
        for mode, seconds in times.items():  # the same batch through each mode, interleaved
            took = step(batch, mode)
            if index >= 2:  # warm-up
                seconds.append(took)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"Command: `python benchmarks/bench_kd_step.py --run {args.run} --data {args.data}`  ")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"torch {torch.__version__}  ")
    print(f"Date: {datetime.date.today()}; {args.batches} batches of {args.batch_size} after 2 warm-up, "
          f"teachers {', '.join(cache.teacher_names)}, k = {cache.k}\n")
    print("| step | median (s) | ratio to plain CTC |")
    print("|---|---:|---:|")
    labels = {"ctc": "plain CTC student", "cached": "KD from the cache",
              "online": f"KD with {len(cache.teacher_names)} online teachers"}
    for mode, seconds in median.items():
        print(f"| {labels[mode]} | {seconds:.3f} | {seconds / median['ctc']:.2f}x |")


if __name__ == "__main__":
    main()
