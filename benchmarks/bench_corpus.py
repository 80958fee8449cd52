"""Corpus build speed: seconds of synthesized audio per second of wall time.

Builds each (task, size, domains) case from scratch in a temporary folder
(median of ``--repeats`` runs for tiny, one run for small) and prints a
markdown table for benchmarks/RESULTS.md.

Command::

    python benchmarks/bench_corpus.py            # tiny x3 and small x1, both tasks
    python benchmarks/bench_corpus.py --repeats 5 --no-small
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from speechkd.data.corpus import build_corpus

CASES = (
    # task, size, domains, workers
    ("numbers", "tiny", ("clean",), 1),
    ("numbers", "tiny", ("clean", "telephone", "noise", "reverb"), 1),
    ("sentences", "tiny", ("clean",), 1),
    ("numbers", "small", ("clean",), 2),
    ("sentences", "small", ("clean",), 2),
    ("numbers", "small", ("clean", "telephone", "noise", "reverb"), 2),
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def time_build(task: str, size: str, domains, workers: int, augment=None) -> tuple[float, dict]:
    """Wall seconds of one build from scratch in a temporary folder, and its summary."""
    folder = tempfile.mkdtemp(prefix="bench_corpus_")
    try:
        start = time.perf_counter()
        summary = build_corpus(task, size, folder, seed=0, domains=domains, workers=workers,
                               progress=False, augment=augment)
        return time.perf_counter() - start, summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per tiny case (median)")
    parser.add_argument("--no-small", action="store_true", help="skip the small builds")
    args = parser.parse_args(argv)

    rows = []
    for task, size, domains, workers in CASES:
        if size == "small" and args.no_small:
            continue
        repeats = args.repeats if size == "tiny" else 1
        walls, summary = [], None
        for _ in range(repeats):
            wall, summary = time_build(task, size, domains, workers)
            walls.append(wall)
        wall = statistics.median(walls)
        audio_s = summary["total"]["hours"] * 3600
        # every domain is an extra copy of the audio: count what was written
        written_s = audio_s * len(summary["domains"])
        rows.append((task, size, ", ".join(summary["domains"]),
                     workers, repeats, summary["total"]["utterances"], audio_s / 60, wall,
                     audio_s / wall, written_s / wall))

    print(f"Command: `python {' '.join(sys.argv)}`  ")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores  ")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    print("| task | size | domains | workers | runs | utterances | audio (min) | wall (s, median) "
          "| clean audio s / wall s | all written audio s / wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, size, domains, workers, repeats, utts, minutes, wall, speed, written in rows:
        print(f"| {task} | {size} | {domains} | {workers} | {repeats} | {utts} | "
              f"{minutes:.1f} | {wall:.1f} | {speed:.0f} | {written:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
