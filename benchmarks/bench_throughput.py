"""Training throughput (audio seconds per second) per architecture and size: eager, torch.compile, bf16.

Each row trains one model for a fixed wall-clock budget on the real data
pipeline: the embedded corpus's ``train.csv`` read by
:func:`speechkd.data.pipelines.make_dataset` (audio from disk, tokens),
batched by SpeechBrain's ``DynamicBatchSampler`` on total duration (as the
``dynamic_batching`` YAML key does), one forward + CTC + backward + AdamW
step per batch. Throughput counts the batches' real audio (no padding) over
the wall time of the timed steps, data loading included; the first
``--warmup`` batches (and torch.compile's compilation) are not timed.

Modes: ``eager`` (fp32), ``compile`` (``torch.compile`` of the model),
``bf16`` (fp32 weights, the step under ``torch.autocast`` in bfloat16, as
SpeechBrain's ``--precision=bf16`` does). Sizes: ``yaml`` (the
``hparams/models/<arch>.yaml`` sizes) and, with ``--sizes yaml full``, the
``hparams/pipelines/full.yaml`` sizes (10-30M-parameter teachers; slow on a CPU).

    python benchmarks/bench_throughput.py --data data/numbers-small --seconds 15
    python benchmarks/bench_throughput.py --data data/numbers-small --device cuda --sizes yaml full --max-batch 512
"""

import argparse
import datetime
import os
import re
import time

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from machine import machine_line

from speechkd.data.corpus import build_corpus
from speechkd.data.pipelines import make_dataset
from speechkd.experiment import inventory_for, load_hparams
from speechkd.models import count_parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("eager", "compile", "bf16")


def model_sizes(size):
    """``{arch: model partial}``: the model YAMLs' sizes, or those of full.yaml's teachers and student."""
    specs = {arch: {} for arch in ("student", "tdnn", "crdnn", "conformer")}
    if size == "full":
        pipeline, _ = load_hparams(os.path.join(REPO, "hparams", "pipelines", "full.yaml"))
        specs = {**{name: spec["overrides"] for name, spec in pipeline["teachers"].items()},
                 "student": pipeline["student"]["overrides"]}
    out = {}
    for arch, overrides in specs.items():
        with open(os.path.join(REPO, "hparams", "models", f"{arch}.yaml")) as fin:
            text = fin.read()
        sizes = {key: value for key, value in overrides.items() if re.search(rf"^{key}:", text, re.MULTILINE)}
        out[arch] = load_hyperpyyaml(text, overrides=sizes)["model"]
    return out


def batches(dataset, max_batch_seconds):
    sampler = sb.dataio.sampler.DynamicBatchSampler(
        dataset, max_batch_length=max_batch_seconds, num_buckets=20, length_func=lambda item: item["duration"],
        shuffle=True, batch_ordering="random")
    return sb.dataio.dataloader.make_dataloader(dataset, batch_sampler=sampler)


def throughput(model, loader, mode, device, seconds, warmup):
    """Audio seconds per wall second over the timed steps, and the time spent before them (warm-up, compile)."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # dynamic shapes: duration-bucketed batches change length every step (no recompiling per shape)
    forward = torch.compile(model, dynamic=True) if mode == "compile" else model
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=mode == "bf16")
    audio = 0.0
    start = time.perf_counter()
    steps, timed_from = 0, None
    while True:
        for batch in loader:
            wavs, wav_lens = (x.to(device) for x in batch.sig)
            tokens, token_lens = (x.to(device) for x in batch.tokens)
            with autocast:
                log_probs = forward(wavs, wav_lens)
            frames = torch.round(wav_lens * log_probs.shape[1]).long()
            loss = torch.nn.functional.ctc_loss(log_probs.float().transpose(0, 1), tokens, frames, token_lens.long(),
                                                zero_infinity=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            steps += 1
            if steps == warmup:
                timed_from = time.perf_counter()
                setup = timed_from - start
            elif steps > warmup:
                audio += float((wav_lens * wavs.shape[1]).sum()) / 16000
                if time.perf_counter() - timed_from > seconds:
                    return audio / (time.perf_counter() - timed_from), setup


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="corpus folder (the numbers corpus is built there if missing)")
    parser.add_argument("--corpus-size", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=["yaml"], choices=("yaml", "full"))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--archs", nargs="+", default=["student", "tdnn", "crdnn", "conformer"])
    parser.add_argument("--seconds", type=float, default=15.0, help="timed wall seconds per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-batch", type=float, default=24.0, help="audio seconds per dynamic batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not os.path.exists(os.path.join(args.data, "train.csv")):
        build_corpus("numbers", args.corpus_size, args.data, seed=0, progress=False)
    train_csv = os.path.join(args.data, "train.csv")
    inventory = inventory_for([train_csv], os.path.join(args.data, "bench_tokens.txt"))
    loader = batches(make_dataset(train_csv, args.data, inventory, sort="random"), args.max_batch)

    print(f"{datetime.date.today()} · {machine_line()} · device {args.device} · {args.threads} thread(s) · "
          f"dynamic batches of <= {args.max_batch:g} s audio · {args.seconds:g} s timed per row")
    print("| model | size | params | mode | audio s / s | vs eager | warm-up + compile (s) |")
    print("|---|---|---:|---|---:|---:|---:|")
    for size in args.sizes:
        for arch, factory in model_sizes(size).items():
            if arch not in args.archs:
                continue
            eager = None
            for mode in args.modes:
                torch.manual_seed(0)
                model = factory(n_tokens=len(inventory))
                try:
                    rate, setup = throughput(model, loader, mode, args.device, args.seconds, args.warmup)
                except Exception as error:  # noqa: BLE001 (a mode this machine cannot run is a row saying why)
                    print(f"| {arch} | {size} | {count_parameters(model):,} | {mode} | failed: "
                          f"{type(error).__name__}: {str(error).splitlines()[0][:80]} | | |")
                    continue
                eager = rate if mode == "eager" else eager
                ratio = f"{rate / eager:.2f}x" if eager else ""
                print(f"| {arch} | {size} | {count_parameters(model):,} | {mode} | {rate:,.1f} | {ratio} | "
                      f"{setup:.1f} |", flush=True)


if __name__ == "__main__":
    main()
