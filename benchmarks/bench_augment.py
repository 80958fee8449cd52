"""Corpus build time with per-utterance augmentation on and off, and the share of each effect.

Builds the same corpus from scratch once per augmentation preset (``none``
first) with the workers the builder uses for the size, and prints two
markdown tables for benchmarks/RESULTS.md: wall and CPU time per preset
(CPU: this process and its reaped synthesis workers, which a loaded shared
machine distorts less than wall time), and the share of train utterances
each effect was applied to (from ``corpus.json``).

Command::

    nice python benchmarks/bench_augment.py                       # numbers/small, none/telephone/full
    python benchmarks/bench_augment.py --size tiny --presets none full
"""

from __future__ import annotations

import argparse
import datetime
import resource
import sys

from bench_corpus import time_build
from machine import machine_line

from speechkd.data.augment import EFFECTS, PRESETS


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    return sum(usage.ru_utime + usage.ru_stime for usage in (
        resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="numbers", choices=("numbers", "sentences"))
    parser.add_argument("--size", default="small", choices=("tiny", "small"))
    parser.add_argument("--presets", nargs="+", default=["none", "telephone", "full"],
                        choices=tuple(PRESETS))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    rows, shares = [], {}
    for preset in args.presets:
        cpu_before = cpu_seconds()
        wall, summary = time_build(args.task, args.size, ("clean",), args.workers, augment=preset)
        cpu = cpu_seconds() - cpu_before
        train = summary["splits"]["train"]
        rows.append((preset, summary["total"]["utterances"],
                     sum(v["seconds"] for v in train.values()) / 60, wall, cpu))
        shares[preset] = summary.get("augment_shares", {}).get("train", {})
        print(f"{preset}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)

    base_wall, base_cpu = rows[0][3], rows[0][4]
    print(f"Command: `python {' '.join(sys.argv)}`  ")
    print(f"Machine: {machine_line()}  ")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    print(f"| {args.task}/{args.size} augment | utterances | train audio (min) | wall (s) "
          f"| wall / `{rows[0][0]}` | CPU (s) | CPU / `{rows[0][0]}` |")
    print("|---|---|---|---|---|---|---|")
    for preset, utterances, minutes, wall, cpu in rows:
        print(f"| {preset} | {utterances} | {minutes:.1f} | {wall:.1f} | {wall / base_wall:.2f} "
              f"| {cpu:.1f} | {cpu / base_cpu:.2f} |")
    augmented = [preset for preset in args.presets if shares[preset]]
    if augmented:
        print("\nShare of train utterances per effect (p in the preset in brackets):\n")
        print("| effect | " + " | ".join(augmented) + " |")
        print("|---|" + "---|" * len(augmented))
        for name in EFFECTS:
            cells = [f"{shares[p][name]:.2f} ({PRESETS[p][name]['p']})" if name in shares[p]
                     else "—" for p in augmented]
            print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
