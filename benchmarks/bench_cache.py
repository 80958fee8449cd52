"""Posterior-cache size per hour of audio and random-access read throughput.

Synthetic teacher posteriors (one teacher, V tokens, 50 frames/s) are written
with :class:`speechkd.distill.cache.PosteriorCacheWriter` at several k, then
read back in random order with ``PosteriorCache.get`` (values copied out of
the memory map, so the bytes are really read) and with ``collate`` in
batches, and opened with and without the up-front integrity check
(checksums and values of every shard, ``PosteriorCache.open(verify=True)``).
The files were just written, so reads hit the OS page cache: this
measures the cache's own overhead, not the disk.

Usage::

    python benchmarks/bench_cache.py [--utts 200] [--seconds 8] [--vocab 60] [--ks 0 32 8]

Prints a markdown table with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model

from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter, make_meta

FRAMES_PER_SECOND = 50




def folder_bytes(folder: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def bench_one(k: int, utts: int, seconds: float, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    symbols = ["<blank>"] + [f"s{i}" for i in range(vocab - 1)]
    meta = make_meta(
        [{"name": "teacher", "class": "Synthetic", "fingerprint": "0" * 16, "frame_shift_ms": 20}],
        symbols,
        {"sample_rate": 16000},
        k=k,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frames_total = 0
        start = time.perf_counter()
        with PosteriorCacheWriter(folder, meta, shard_utts=64) as writer:
            for u in range(utts):
                frames = int(FRAMES_PER_SECOND * seconds * rng.uniform(0.5, 1.5))
                frames_total += frames
                logits = torch.from_numpy(
                    rng.standard_normal((frames, vocab), dtype=np.float32) * 3
                )
                writer.add(f"utt{u:06d}", [torch.log_softmax(logits, -1)])
        write_s = time.perf_counter() - start
        hours = frames_total / FRAMES_PER_SECOND / 3600
        shard_bytes = folder_bytes(folder, "shards/*.npy")
        total_bytes = folder_bytes(folder)

        start = time.perf_counter()
        PosteriorCache.open(folder, verify=False)
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        cache = PosteriorCache.open(folder)
        verified_s = time.perf_counter() - start
        order = rng.permutation(cache.utt_ids)
        start = time.perf_counter()
        for utt in order:
            for values, ids in cache.get(utt):
                np.array(values), np.array(ids)
        get_rate = len(order) / (time.perf_counter() - start)
        start = time.perf_counter()
        for b in range(0, len(order), 16):
            cache.collate(list(order[b : b + 16]))
        collate_rate = len(order) / (time.perf_counter() - start)
    return {
        "k": "full" if k == 0 else str(k),
        "hours": hours,
        "shard_mb_per_hour": shard_bytes / hours / 1e6,
        "total_mb_per_hour": total_bytes / hours / 1e6,
        "write_hours_per_s": hours / write_s,
        "get_utts_per_s": get_rate,
        "collate_utts_per_s": collate_rate,
        "open_ms": 1000 * open_s,
        "verify_s_per_gb": (verified_s - open_s) / (shard_bytes / 1e9),
        "verify_s_per_hour": (verified_s - open_s) / hours,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0, help="mean utterance duration")
    parser.add_argument("--vocab", type=int, default=60)
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[0, 32, 8], help="0 = full distribution"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [bench_one(k, args.utts, args.seconds, args.vocab) for k in args.ks]
    command = " ".join(["python benchmarks/bench_cache.py", *sys.argv[1:]])
    print(f"Command: `{command}`")
    print(
        f"Machine: {cpu_model()}, {torch.get_num_threads()} torch thread, Python {platform.python_version()}"
    )
    print(f"Date: {datetime.date.today().isoformat()}")
    print(
        f"Synthetic: 1 teacher, V = {args.vocab}, {FRAMES_PER_SECOND} frames/s, {args.utts} utterances of "
        f"~{args.seconds:g} s ({rows[0]['hours']:.3f} h); reads from the OS page cache.\n"
    )
    print(
        "| k | shards MB / hour | whole folder MB / hour | write (audio h / s) | random get (utts/s) "
        "| collate, batch 16 (utts/s) | open (ms) | verify (s / GB) | verify (s / audio hour) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['k']} | {r['shard_mb_per_hour']:.1f} | {r['total_mb_per_hour']:.1f} | "
            f"{r['write_hours_per_s']:.2f} | {r['get_utts_per_s']:.0f} | {r['collate_utts_per_s']:.0f} | "
            f"{r['open_ms']:.0f} | {r['verify_s_per_gb']:.2f} | {r['verify_s_per_hour']:.3f} |"
        )


if __name__ == "__main__":
    main()
