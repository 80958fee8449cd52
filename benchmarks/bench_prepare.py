"""Real-corpus preparation speed and dataloader throughput with dynamic batching.

Generates a LibriSpeech-layout tree (16 kHz FLAC) and a Common-Voice-layout tree
(48 kHz stereo MP3) from the embedded corpus's audio, utterances of 1-35 s,
prepares both (utterances/s, audio hours/s), compares reading a 48 kHz MP3 and
resampling it on load against reading the prepared 16 kHz FLAC, then runs one
epoch of the training loader over the prepared LibriSpeech manifest with fixed
batches and with SpeechBrain's DynamicBatchSampler (audio seconds/s, padding).

    nice python benchmarks/bench_prepare.py --hours 2 --cv-hours 0.5 --workers 2
"""

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import machine_line

from speechkd.data.corpus import build_corpus
from speechkd.data.manifest import read_manifest
from speechkd.data.pipelines import resolve_path


def source_audio(folder):
    """All clean utterances of the tiny `numbers` corpus, concatenated (16 kHz)."""
    build_corpus("numbers", "tiny", folder, seed=0, workers=1, progress=False)
    rows = [r for split in ("train", "dev", "test") for r in read_manifest(Path(folder) / f"{split}.csv")]
    return np.concatenate([sf.read(resolve_path(r["wav"], folder), dtype="float32")[0] for r in rows])


def utterance_lengths(hours, seed=0):
    """Durations in seconds (1-35 s, log-uniform) adding up to ``hours``."""
    rng, lengths = np.random.default_rng(seed), []
    while sum(lengths) < hours * 3600:
        lengths.append(float(np.exp(rng.uniform(np.log(1), np.log(35)))))
    return lengths


def librispeech_tree(root, audio, hours):
    lengths, offset = utterance_lengths(hours), 0
    for n, seconds in enumerate(lengths):
        spk, chapter = 100 + n % 40, 7
        folder = Path(root, "train-clean-100" if n % 20 else ("dev-clean" if n % 40 else "test-clean"),
                      str(spk), str(chapter))
        folder.mkdir(parents=True, exist_ok=True)
        samples = int(seconds * 16000)
        piece = np.take(audio, np.arange(offset, offset + samples), mode="wrap")
        offset += samples
        utt = f"{spk}-{chapter}-{n:05d}"
        sf.write(folder / f"{utt}.flac", piece, 16000)
        with open(folder / f"{spk}-{chapter}.trans.txt", "a") as fout:
            fout.write(f"{utt} UTTERANCE NUMBER {n} OF THE BENCHMARK\n")
    return lengths


def commonvoice_tree(root, audio, hours):
    import soxr

    lengths, offset = utterance_lengths(hours, seed=1), 0
    folder = Path(root, "en")
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "dev": [], "test": []}
    for n, seconds in enumerate(lengths):
        samples = int(seconds * 16000)
        piece = soxr.resample(np.take(audio, np.arange(offset, offset + samples), mode="wrap"), 16000, 48000)
        offset += samples
        sf.write(folder / "clips" / f"clip{n}.mp3", np.stack([piece, piece], 1), 48000, format="MP3")
        split = "train" if n % 20 else ("dev" if n % 40 else "test")
        lines[split].append(f"client{n % 30}\tclip{n}.mp3\tUtterance number {n}, of the benchmark.")
    for split, split_lines in lines.items():
        (folder / f"{split}.tsv").write_text("client_id\tpath\tsentence\n" + "\n".join(split_lines) + "\n")
    return lengths


def timed(label, function):
    began = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - began
    return result, seconds


def prepare_speed(name, prepare, lengths):
    report, seconds = timed(name, prepare)
    kept = sum(s["utterances"] for s in report["splits"].values())
    hours = sum(s["hours"] for s in report["splits"].values())
    print(f"| prepare {name} | {kept} utt, {hours:.2f} h | {seconds:.1f} s | {kept / seconds:.1f} utt/s | "
          f"{hours / seconds * 3600:.0f} s audio/s ({hours / seconds:.3f} h/s) |")
    return report


def on_load_cost(cv_root, prepared, n=200):
    """Seconds per audio second: prepared 16 kHz FLAC vs 48 kHz stereo MP3 resampled on load."""
    import soxr

    clips = sorted(Path(cv_root, "en", "clips").glob("*.mp3"))[:n]
    flacs = sorted(Path(prepared, "audio", "train").glob("*.flac"))[:n]

    def read_mp3():
        total = 0.0
        for clip in clips:
            x, rate = sf.read(clip, dtype="float32")
            total += len(soxr.resample(x.mean(1), rate, 16000)) / 16000
        return total

    def read_flac():
        return sum(len(sf.read(f, dtype="float32")[0]) / 16000 for f in flacs)

    (mp3_audio, mp3_s), (flac_audio, flac_s) = timed("mp3", read_mp3), timed("flac", read_flac)
    print(f"| load 48 kHz MP3 + resample (on load) | {mp3_audio / mp3_s:.0f} s audio/s |")
    print(f"| load prepared 16 kHz FLAC | {flac_audio / flac_s:.0f} s audio/s |")


def loader_throughput(prepared, max_batch_length):
    """One epoch of the training loader: fixed batches of 8 vs DynamicBatchSampler."""
    import speechbrain as sb

    from speechkd.data.pipelines import make_dataset
    from speechkd.text import TokenInventory

    inventory = TokenInventory.load(Path(prepared, "tokens.txt"))
    dataset = make_dataset(str(Path(prepared, "train.csv")), prepared, inventory, sort="none")
    durations = {i: d["duration"] for i, d in dataset.data.items()}
    variants = {
        "batch_size 8, shuffled": {"batch_size": 8, "shuffle": True},
        f"dynamic, max {max_batch_length} s, 20 buckets": {"batch_sampler": sb.dataio.sampler.DynamicBatchSampler(
            dataset, max_batch_length=max_batch_length, num_buckets=20, length_func=lambda x: x["duration"])},
    }
    for name, kwargs in variants.items():
        loader = sb.dataio.dataloader.make_dataloader(dataset, num_workers=2, **kwargs)
        audio = padded = batches = largest = 0.0
        began = time.perf_counter()
        for batch in loader:
            lengths = [durations[i] for i in batch.id]
            audio += sum(lengths)
            padded += max(lengths) * len(lengths)
            largest = max(largest, max(lengths) * len(lengths))
            batches += 1
        seconds = time.perf_counter() - began
        print(f"| loader: {name} | {int(batches)} batches | {audio / seconds:.0f} s audio/s | "
              f"padding {100 * (1 - audio / padded):.1f} % | largest padded batch {largest:.0f} s |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--cv-hours", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-batch-length", type=float, default=200.0)
    args = parser.parse_args()
    from speechkd.data.corpora.commonvoice import prepare_commonvoice
    from speechkd.data.corpora.librispeech import prepare_librispeech

    os.environ.setdefault("TQDM_DISABLE", "1")  # lhotse's progress bars
    print(f"{datetime.date.today()}, {machine_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        audio = source_audio(Path(tmp, "tiny"))
        _, ls_gen = timed("gen", lambda: librispeech_tree(Path(tmp, "LS"), audio, args.hours))
        _, cv_gen = timed("gen", lambda: commonvoice_tree(Path(tmp, "CV"), audio, args.cv_hours))
        print(f"generated {args.hours} h LibriSpeech tree in {ls_gen:.0f} s, {args.cv_hours} h Common Voice "
              f"tree in {cv_gen:.0f} s; {args.workers} preparation workers")
        print("| what | amount | wall | rate | audio rate |\n|---|---|---|---|---|")
        prepare_speed("LibriSpeech (16 kHz FLAC, no resampling)", lambda: prepare_librispeech(
            Path(tmp, "LS"), Path(tmp, "ls_out"), dev_parts=("dev-clean",), test_parts=("test-clean",),
            workers=args.workers), None)
        prepare_speed("Common Voice (48 kHz stereo MP3 -> 16 kHz mono)", lambda: prepare_commonvoice(
            Path(tmp, "CV"), Path(tmp, "cv_out"), workers=args.workers), None)
        on_load_cost(Path(tmp, "CV"), Path(tmp, "cv_out"))
        loader_throughput(str(Path(tmp, "ls_out")), args.max_batch_length)


if __name__ == "__main__":
    main()
