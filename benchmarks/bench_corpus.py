"""Corpus build speed: seconds of synthesized audio per second of wall time.

Builds each (task, size, domains) case from scratch in a temporary folder
(median of ``--repeats`` runs for tiny, one run for small) and prints a
markdown table for benchmarks/RESULTS.md.

Command::

    python benchmarks/bench_corpus.py            # tiny x3 and small x1, both tasks
    python benchmarks/bench_corpus.py --repeats 5 --no-small
    python benchmarks/bench_corpus.py --voices   # numbers/small: espeak-ng only vs every
                                                 # engine, and how each engine sounds
    python benchmarks/bench_corpus.py --cross-lingual  # numbers/small es de fr: espeak-ng
                                                 # only vs + festival's phone-mapped voices
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
from pathlib import Path

import numpy as np

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


def print_header() -> None:
    """Command, machine and date lines above a RESULTS.md table."""
    print(f"Command: `python {' '.join(sys.argv)}`  ")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores  ")
    print(f"Date: {datetime.date.today().isoformat()}\n")


def time_build(task: str, size: str, domains, workers: int, engines=None,
               inspect=None, augment=None, languages=None) -> tuple[float, dict]:
    """Wall seconds and summary of one build from scratch; ``inspect(folder)`` runs before
    the folder is deleted."""
    folder = tempfile.mkdtemp(prefix="bench_corpus_")
    try:
        start = time.perf_counter()
        summary = build_corpus(task, size, folder, seed=0, domains=domains, workers=workers,
                               progress=False, engines=engines, augment=augment,
                               languages=languages)
        wall = time.perf_counter() - start
        if inspect is not None:
            inspect(Path(folder))
        return wall, summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def median_f0(wav: np.ndarray, sr: int = 16000, low: float = 60.0, high: float = 400.0
              ) -> float | None:
    """Median f0 (Hz) of the voiced 40 ms frames of ``wav`` (shape ``(samples,)``), by
    normalised autocorrelation (FFT); ``None`` when no frame is clearly periodic.

    A frame is voiced when it is within 10 dB of the loudest frame and its
    autocorrelation peak between ``sr / high`` and ``sr / low`` exceeds 0.6.
    """
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    if len(wav) < frame:
        return None
    starts = np.arange(0, len(wav) - frame + 1, hop)
    frames = np.stack([wav[i:i + frame] for i in starts]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    energy = (frames ** 2).sum(axis=1)
    frames = frames[energy > 0.1 * energy.max()]
    spectrum = np.fft.rfft(frames, n=2 * frame, axis=1)
    corr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    corr /= corr[:, :1] + 1e-12
    lo, hi = int(sr / high), int(sr / low)
    lags = lo + np.argmax(corr[:, lo:hi], axis=1)
    peaks = corr[np.arange(len(lags)), lags]
    voiced = peaks > 0.6
    return float(np.median(sr / lags[voiced])) if voiced.any() else None


def engine_sound(folder: Path, max_per_voice: int = 12) -> list[tuple]:
    """Per language and engine: utterances, voices, mean seconds per word, median f0 range,
    share of speech frames.

    Returns
    -------
    list of tuple
        ``(lang, engine, utterances, voices, s_per_word, f0_low, f0_median, f0_high,
        voiced)`` where the f0 figures are the 10th, 50th and 90th percentiles of
        per-utterance medians over at most ``max_per_voice`` utterances of each
        pseudo-speaker, and ``voiced`` the mean share of their 10 ms frames within
        40 dB of the utterance's loudest (:func:`speechkd.data.voices.base.voiced_frames`).
    """
    import soundfile as sf

    from speechkd.data.manifest import read_manifest
    from speechkd.data.voices.base import voiced_frames

    rows = [row for split in ("train", "dev", "test")
            for row in read_manifest(folder / f"{split}.csv")]
    table = []
    for key in sorted({(r["lang"], r["engine"]) for r in rows}):
        group = [r for r in rows if (r["lang"], r["engine"]) == key]
        per_word = sum(r["duration"] for r in group) / sum(len(r["wrd"].split()) for r in group)
        f0s, voiced, seen = [], [], {}
        for row in group:
            seen[row["spk_id"]] = seen.get(row["spk_id"], 0) + 1
            if seen[row["spk_id"]] <= max_per_voice:
                wav = sf.read(row["wav"].replace("$data_root", str(folder)), dtype="float32")[0]
                voiced.append(voiced_frames(wav, 16000).mean())
                f0 = median_f0(wav)
                if f0 is not None:
                    f0s.append(f0)
        low, mid, high = np.percentile(f0s, [10, 50, 90]) if f0s else (np.nan,) * 3
        table.append((*key, len(group), len({r["voice"] for r in group}), per_word,
                      low, mid, high, float(np.mean(voiced))))
    return table


def voices_report(languages=None, engines_compared=(["espeak"], None)) -> None:
    """numbers/small, clean, 2 workers: espeak-ng only vs more engines (default all
    installed), for ``languages`` (default all); how each engine sounds in the last build."""
    sound = []
    print("| engines | utterances | audio (min) | wall (s) | clean audio s / wall s | "
          "utterances per engine |")
    print("|---|---|---|---|---|---|")
    for engines in engines_compared:
        last = engines is engines_compared[-1]
        wall, summary = time_build("numbers", "small", ("clean",), 2, engines,
                                   inspect=(lambda f: sound.extend(engine_sound(f)))
                                   if last else None, languages=languages)
        audio_s = summary["total"]["hours"] * 3600
        counts = {}
        for per_lang in summary["splits"].values():
            for stats in per_lang.values():
                for name, n in stats["engines"].items():
                    counts[name] = counts.get(name, 0) + n
        print(f"| {', '.join(summary['engines'])} | {summary['total']['utterances']} | "
              f"{audio_s / 60:.1f} | {wall:.1f} | {audio_s / wall:.0f} | "
              + ", ".join(f"{k} {v}" for k, v in counts.items()) + " |")
    print("\nHow each engine sounds (numbers/small, train+dev+test; f0: 10th/50th/90th "
          "percentile of per-utterance median f0, autocorrelation):\n")
    print("| lang | engine | utterances | voices | s per word | f0 p10 (Hz) | f0 p50 (Hz) | "
          "f0 p90 (Hz) | speech frames |")
    print("|---|---|---|---|---|---|---|---|---|")
    for lang, engine, n, voices, per_word, low, mid, high, voiced in sound:
        print(f"| {lang} | {engine} | {n} | {voices} | {per_word:.2f} | {low:.0f} | {mid:.0f} | "
              f"{high:.0f} | {voiced:.0%} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per tiny case (median)")
    parser.add_argument("--no-small", action="store_true", help="skip the small builds")
    parser.add_argument("--voices", action="store_true",
                        help="only numbers/small: espeak-ng only vs every engine, and how "
                             "each engine sounds (duration per word, f0)")
    parser.add_argument("--cross-lingual", action="store_true",
                        help="only numbers/small in es, de, fr: espeak-ng only vs espeak-ng + "
                             "festival (its English voices speak them by phone mapping)")
    args = parser.parse_args(argv)
    if args.voices or args.cross_lingual:
        print_header()
        if args.cross_lingual:
            voices_report(["es", "de", "fr"], (["espeak"], ["espeak", "festival"]))
        else:
            voices_report()
        return 0

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

    print_header()
    print("| task | size | domains | workers | runs | utterances | audio (min) | wall (s, median) "
          "| clean audio s / wall s | all written audio s / wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, size, domains, workers, repeats, utts, minutes, wall, speed, written in rows:
        print(f"| {task} | {size} | {domains} | {workers} | {repeats} | {utts} | "
              f"{minutes:.1f} | {wall:.1f} | {speed:.0f} | {written:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
