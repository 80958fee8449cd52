"""Parameter count and CPU training throughput of every architecture at its default size.

Throughput is audio seconds processed per wall-clock second for one
forward + CTC loss + backward + Adam step on a batch of 8 x 3 s of random
audio (features computed inside the model), median over the timed steps
after warm-up, with ``torch.set_num_threads(2)``.

Command::

    .venv/bin/python benchmarks/bench_models.py [--steps 5] [--warmup 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model

from speechkd.models import ARCHITECTURES, count_parameters

N_TOKENS = 40
BATCH, SECONDS, SAMPLE_RATE = 8, 3.0, 16000




def train_step_seconds(model: torch.nn.Module, steps: int, warmup: int) -> list[float]:
    """Wall-clock seconds of each timed training step."""
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(BATCH, int(SECONDS * SAMPLE_RATE), generator=generator)
    lens = torch.ones(BATCH)
    targets = torch.randint(1, N_TOKENS, (BATCH, 30), generator=generator)
    target_lens = torch.full((BATCH,), 30)
    out_lens = model.output_lengths(lens, wavs.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        log_probs = model(wavs, lens)
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    command = "python benchmarks/bench_models.py " + " ".join(sys.argv[1:])
    print(f"Command: `{command.strip()}`  ")
    print(f"Machine: {cpu_model()}, torch {torch.__version__}, {args.threads} threads  ")
    print(f"Date: {datetime.date.today().isoformat()}, "
          f"1-min load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs  ")
    print(f"Batch {BATCH} x {SECONDS:g} s random audio, {N_TOKENS} tokens, "
          f"median of {args.steps} steps after {args.warmup} warm-up\n")
    print("| model | class | params | frame shift (ms) | step (s) | train throughput (audio s / s) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, cls in ARCHITECTURES.items():
        model = cls(n_tokens=N_TOKENS)
        step = statistics.median(train_step_seconds(model, args.steps, args.warmup))
        print(f"| {name} | {cls.__name__} | {count_parameters(model):,} | {model.frame_shift_ms} "
              f"| {step:.3f} | {BATCH * SECONDS / step:.1f} |", flush=True)


if __name__ == "__main__":
    main()
