"""Corrupted-input faults (issue 11, items 7-9 and 11-13): each one injected, the tool run, the outcome judged.

Every case builds what it needs in its own folder (a small posterior cache,
a few FLAC utterances and their manifest, an untrained tiny model), damages
one thing, runs the speechkd code a user would run on it, and judges what
happened from the exception, the log and the console output:

- ``refused-named``: stopped with an error that names the damaged file, line
  or utterance;
- ``skipped-counted``: went on, and the log (or stderr) names the culprit and
  counts the skip;
- ``silent``: went on as if nothing were wrong;
- ``lost``: crashed without naming the culprit.

``benchmarks/bench_faults.py`` imports :func:`input_fault_cases`; run alone,
this prints the table (and, with ``--check-cost``, what the up-front
decode of every file costs on a corpus)::

    python benchmarks/fault_inputs.py [--seed 0] [--check-cost data/numbers-tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tiny-model and synthetic-audio helpers of the tests

from machine import machine_line

from speechkd.cli import main as speechkd_main
from speechkd.data.manifest import write_manifest
from speechkd.data.pipelines import checked_rows, refuse_conflicting_ids
from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter, make_meta
from speechkd.distill.target import TeacherTarget
from speechkd.export.runtime import read_audio
from speechkd.text import TokenInventory

OUTCOMES = ("refused-named", "skipped-counted", "silent", "lost")
SYMBOLS = ["<blank>", " ", *"abcdefghij"]


# --------------------------------------------------------------------------- judging
def judge(action: Callable[[], object], culprit: str) -> tuple[str, str]:
    """Run ``action`` with the log and the console captured; the outcome and the line that shows it."""
    log, console = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stderr(console), contextlib.redirect_stdout(io.StringIO()):
            action()
    except Exception as err:  # noqa: BLE001 - any crash is an outcome to report
        text = f"{type(err).__name__}: {err}"
        return ("refused-named" if culprit in text else "lost"), text.splitlines()[0]
    finally:
        root.removeHandler(handler)
    for line in (log.getvalue() + console.getvalue()).splitlines():
        if culprit in line:
            counted = "skip" in log.getvalue() or re.search(r"\d+ of \d+ files failed", console.getvalue())
            return ("skipped-counted" if counted else "refused-named"), line
    return "silent", "no error, no warning naming the culprit"


def result(fault: str, outcome: str, detail: str) -> dict:
    return {"fault": fault, "outcome": outcome, "detail": detail[:160]}


# --------------------------------------------------------------------------- what the cases damage
def small_cache(folder: Path, rng: random.Random, utts: int = 6, k: int = 4) -> list[str]:
    """A two-teacher top-k cache of random posteriors, two utterances per shard; returns the utterance IDs."""
    teachers = [{"name": f"t{i}", "class": "Synthetic", "fingerprint": f"fp{i}", "frame_shift_ms": 20}
                for i in range(2)]
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    ids = [f"utt{u:03d}" for u in range(utts)]
    with PosteriorCacheWriter(folder, make_meta(teachers, SYMBOLS, {"sample_rate": 16000}, k=k),
                              shard_utts=2) as writer:
        for utt in ids:
            frames = 5 + rng.randrange(20)
            writer.add(utt, [torch.log_softmax(3 * torch.randn(frames, len(SYMBOLS), generator=generator), -1)
                             for _ in teachers], errors_per_teacher=[(10.0, 5.0), (20.0, 8.0)])
        writer.set_dev_wer([12.0, 18.0])
    return ids


def open_and_read(folder: Path) -> None:
    """What a distillation run does with a cache: open it, then read every utterance."""
    cache = PosteriorCache.open(folder)
    for utt in cache.utt_ids:
        cache.collate([utt])


def corpus(folder: Path, rng: random.Random, n: int = 4) -> tuple[str, list[dict]]:
    """``n`` synthetic 16 kHz FLAC utterances and their manifest ``train.csv``."""
    from export.export_helpers import TEXTS, synthetic_utterance

    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        wav = synthetic_utterance(rng.randrange(4))
        sf.write(folder / "audio" / f"u{i}.flac", wav, 16000, subtype="PCM_16")
        rows.append({"ID": f"u{i}", "duration": len(wav) / 16000, "wav": f"$data_root/audio/u{i}.flac",
                     "spk_id": "s", "lang": "en", "domain": "clean", "wrd": TEXTS[i % len(TEXTS)]})
    write_manifest(folder / "train.csv", rows)
    return str(folder / "train.csv"), rows


def nan_wav(path: Path, rng: random.Random) -> Path:
    """A float WAV copy of ``path`` with one NaN sample."""
    wav = sf.read(path, dtype="float32")[0]
    wav[rng.randrange(len(wav))] = np.nan
    out = path.with_suffix(".wav")
    sf.write(out, wav, 16000, subtype="FLOAT")
    return out


def tiny_model(folder: Path) -> Path:
    from export.export_helpers import TEXTS, make_experiment, synthetic_utterance

    make_experiment(folder, "student", TokenInventory.from_training_texts(TEXTS)[0], [synthetic_utterance(0)])
    return folder


# --------------------------------------------------------------------------- cache cases (item 7, 8)
def shard_damage(kind: str) -> Callable[[Path, random.Random], dict]:
    def case(workdir: Path, rng: random.Random) -> dict:
        small_cache(workdir, rng)
        path = rng.choice(sorted((workdir / "shards").glob("*.npy")))
        data = bytearray(path.read_bytes())
        if kind == "zeroed values":
            path = rng.choice(sorted((workdir / "shards").glob("*.values.npy")))
            np.save(path, np.zeros_like(np.load(path)))
        elif kind == "flipped bit":
            position = rng.randrange(128, len(data))  # past the .npy header: the numbers themselves
            data[position] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
        elif kind == "truncated shard":
            path.write_bytes(bytes(data[: rng.randrange(len(data))]))
        else:  # random bytes
            path.write_bytes(rng.randbytes(len(data)))
        return result(f"cache: {kind} ({path.name})", *judge(lambda: open_and_read(workdir), path.name))
    return case


def edited_dev_wer(workdir: Path, rng: random.Random) -> dict:
    small_cache(workdir, rng)
    path = workdir / "teacher_errors.json"
    errors = json.loads(path.read_text())
    errors["dev_wer"]["t0"] = round(rng.uniform(0, 5), 2)
    path.write_text(json.dumps(errors))
    return result("cache: dev WER edited by hand", *judge(lambda: open_and_read(workdir), "teacher_errors.json"))


def old_format(workdir: Path, rng: random.Random) -> dict:
    small_cache(workdir, rng)
    meta = json.loads((workdir / "meta.json").read_text())
    meta["format_version"] = 1
    (workdir / "meta.json").write_text(json.dumps(meta))
    return result("cache: built by the previous format (no rest mass)",
                  *judge(lambda: open_and_read(workdir), "format version 1"))


def teacher_nan(workdir: Path, rng: random.Random) -> dict:
    teachers = [{"name": "t0", "class": "Synthetic", "fingerprint": "fp", "frame_shift_ms": 20}]
    log_probs = torch.log_softmax(torch.randn(12, len(SYMBOLS)), -1)
    log_probs[rng.randrange(12), rng.randrange(len(SYMBOLS))] = rng.choice([float("nan"), float("inf")])

    def write():
        with PosteriorCacheWriter(workdir, make_meta(teachers, SYMBOLS, k=4)) as writer:
            writer.add("utt-bad-7", [log_probs])
    return result("cache: teacher gives NaN/+inf log-probs", *judge(write, "utt-bad-7"))


def kl_k_mismatch(workdir: Path, rng: random.Random) -> dict:
    small_cache(workdir, rng, k=4)
    k = rng.choice([2, 8])
    return result(f"KD: loss k = {k} on a cache of k = 4",
                  *judge(lambda: TeacherTarget(PosteriorCache.open(workdir), SYMBOLS, 20, k=k), f"k ({k})"))


def utterance_not_cached(workdir: Path, rng: random.Random) -> dict:
    ids = small_cache(workdir / "cache", rng)
    train = [*ids, "utt-not-cached"]
    rng.shuffle(train)
    # DistillBrain.fit makes this call before the first epoch (tests/reliability/test_bad_input.py runs fit)
    return result("cache: training utterance missing from the cache",
                  *judge(lambda: PosteriorCache.open(workdir / "cache").require(train, "the training set"),
                         "utt-not-cached"))


# --------------------------------------------------------------------------- audio and manifest cases (9, 11, 12)
def audio_damage(kind: str) -> Callable[[Path, random.Random], dict]:
    def case(workdir: Path, rng: random.Random) -> dict:
        manifest, rows = corpus(workdir, rng)
        victim = rng.randrange(len(rows))
        path = workdir / "audio" / f"u{victim}.flac"
        data = bytearray(path.read_bytes())
        if kind == "truncated FLAC":
            path.write_bytes(bytes(data[: len(data) // 2 + rng.randrange(len(data) // 3)]))
        elif kind == "corrupt FLAC":
            start = len(data) // 3 + rng.randrange(len(data) // 3)
            data[start : start + 100] = rng.randbytes(100)
            path.write_bytes(bytes(data))
        elif kind == "NaN samples":
            path = nan_wav(path, rng)
        elif kind == "empty transcript":
            rows[victim]["wrd"] = ""
        elif kind == "duration disagrees with the file":
            rows[victim]["duration"] += rng.choice([-1, 1]) * rng.uniform(0.3, 1.0)
        rows[victim]["wav"] = f"$data_root/audio/{path.name}"
        write_manifest(manifest, rows)
        return result(f"data: {kind}", *judge(lambda: checked_rows(manifest, str(workdir)), f"u{victim}"))
    return case


def conflicting_ids(workdir: Path, rng: random.Random) -> dict:
    train, rows = corpus(workdir / "train", rng)
    dev, dev_rows = corpus(workdir / "dev", rng)
    clash = rng.randrange(len(rows))
    dev_rows[clash]["ID"] = rows[clash]["ID"]
    dev_rows[clash]["wav"] = str(workdir / "dev" / "audio" / f"u{(clash + 1) % len(rows)}.flac")
    write_manifest(dev, dev_rows)
    return result("data: same ID in train and dev, other audio",
                  *judge(lambda: refuse_conflicting_ids([train, dev], str(workdir / "train")), f"'u{clash}'"))


# --------------------------------------------------------------------------- command-line cases (11, 13)
def transcribe_bad_file(kind: str) -> Callable[[Path, random.Random], dict]:
    def case(workdir: Path, rng: random.Random) -> dict:
        model = tiny_model(workdir / "model")
        corpus(workdir, rng, n=3)
        bad = {"missing file": workdir / "nowhere.flac", "NaN samples": nan_wav(workdir / "audio" / "u1.flac", rng),
               "truncated FLAC": workdir / "audio" / "u1.flac"}[kind]
        if kind == "truncated FLAC":
            bad.write_bytes(bad.read_bytes()[:2000])
        files = [str(workdir / "audio" / "u0.flac"), str(bad), str(workdir / "audio" / "u2.flac")]
        return result(f"transcribe: {kind} among good files",
                      *judge(lambda: speechkd_main(["transcribe", "--model", str(model), *files]), str(bad)))
    return case


def runtime_nan(workdir: Path, rng: random.Random) -> dict:
    corpus(workdir, rng, n=1)
    bad = nan_wav(workdir / "audio" / "u0.flac", rng)
    return result("speechkd-run: NaN samples", *judge(lambda: read_audio(str(bad), 16000), str(bad)))


def export_damaged_checkpoint(kind: str) -> Callable[[Path, random.Random], dict]:
    def case(workdir: Path, rng: random.Random) -> dict:
        model = tiny_model(workdir / "model")
        manifest, _ = corpus(workdir, rng, n=2)
        (weights,) = model.glob("save/CKPT+*/model.ckpt")
        if kind == "missing":
            weights.unlink()
        else:
            weights.write_bytes(rng.randbytes(rng.randrange(64)))
        command = ["export", "--model", str(model), "--out", str(workdir / "out"), "--manifest", manifest]
        return result(f"export: {kind} model.ckpt", *judge(lambda: speechkd_main(command), str(weights)))
    return case


def input_fault_cases() -> list[Callable[[Path, random.Random], dict]]:
    """Every corrupted-input case; each ``case(workdir, rng) -> {"fault", "outcome", "detail"}``."""
    return [
        shard_damage("zeroed values"),
        shard_damage("flipped bit"),
        shard_damage("truncated shard"),
        shard_damage("random bytes"),
        edited_dev_wer,
        old_format,
        teacher_nan,
        kl_k_mismatch,
        utterance_not_cached,
        audio_damage("truncated FLAC"),
        audio_damage("corrupt FLAC"),
        audio_damage("NaN samples"),
        audio_damage("empty transcript"),
        audio_damage("duration disagrees with the file"),
        conflicting_ids,
        transcribe_bad_file("missing file"),
        transcribe_bad_file("NaN samples"),
        transcribe_bad_file("truncated FLAC"),
        runtime_nan,
        export_damaged_checkpoint("missing"),
        export_damaged_checkpoint("corrupt"),
    ]


def check_cost(corpus_folder: str) -> str:
    """Seconds per hour of audio of the up-front manifest check (whole-file decode) against reading headers only."""
    import time

    from speechkd.data.manifest import read_manifest
    from speechkd.data.pipelines import resolve_path

    lines = []
    for split in ("train", "dev", "test"):
        manifest = Path(corpus_folder) / f"{split}.csv"
        rows = read_manifest(manifest)
        hours = sum(row["duration"] for row in rows) / 3600
        start = time.perf_counter()
        for row in rows:
            sf.info(resolve_path(row["wav"], corpus_folder))
        headers = time.perf_counter() - start
        start = time.perf_counter()
        checked_rows(str(manifest), corpus_folder)
        decoded = time.perf_counter() - start
        lines.append(f"| {split} | {len(rows)} | {hours * 60:.1f} | {headers / hours:.2f} | {decoded / hours:.2f} |")
    return "\n".join([("| split | utterances | audio (min) | headers only (s / audio hour) "
                      "| checked_rows, whole decode (s / audio hour) |"), "|---|---:|---:|---:|---:|", *lines])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-cost", metavar="CORPUS", help="also time the up-front check on a corpus folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    rows = []
    for case in input_fault_cases():
        workdir = Path(tempfile.mkdtemp(prefix="fault_"))
        try:
            rows.append(case(workdir, rng))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Command: `python benchmarks/fault_inputs.py {' '.join(sys.argv[1:])}`")
    print(f"Machine: {machine_line()}")
    print(f"Date: {datetime.date.today().isoformat()}\n")
    print("| fault | outcome | what the user sees |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['fault']} | {row['outcome']} | `{row['detail'].replace('|', '/')}` |")
    bad = sum(row["outcome"] in ("silent", "lost") for row in rows)
    print(f"\n{len(rows)} corrupted inputs: {bad} silent or lost")
    if args.check_cost:
        print(f"\nUp-front check of {args.check_cost}:\n\n{check_cost(args.check_cost)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
