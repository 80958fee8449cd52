"""Caching throughput of a wav2vec2-base-sized (95M parameters) pretrained teacher, fp32.

A randomly initialised ``Wav2Vec2ForCTC`` with transformers' default config
(wav2vec2-base: 12 layers, 768 dims, group-normalized feature extractor) is
saved and loaded back through :class:`speechkd.distill.pretrained.HuggingFaceCTCTeacher`,
then runs over synthetic utterances of 1-6 s in batches sorted by duration,
as ``recipes/distill/cache_teachers.py`` feeds it. Two feature extractors:

* ``group`` (wav2vec2-base, HuBERT base): no attention mask, so the teacher
  runs each utterance alone (padding would change the output);
* ``layer`` (the XLS-R / large-style extractor at base size): batched with an
  attention mask.

Usage::

    python benchmarks/bench_pretrained_teachers.py [--seconds 60] [--batch-size 8] [--threads 1]

Prints a markdown table with the command, machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_line

from speechkd.distill.pretrained import HuggingFaceCTCTeacher

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVKXJQZ'")}}


def save_base_model(folder: str, extractor: str) -> int:
    """Write a random wav2vec2-base-sized CTC model; return its parameter count."""
    import json

    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(VOCAB), feat_extract_norm=extractor,
                            do_stable_layer_norm=extractor == "layer")
    model = Wav2Vec2ForCTC(config)
    model.save_pretrained(folder)
    with open(f"{folder}/vocab.json", "w") as fout:
        json.dump(VOCAB, fout)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=extractor == "layer").save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def utterance_lengths(total_seconds: float, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    lengths, total = [], 0
    while total < total_seconds * 16000:
        lengths.append(int(16000 * (1.0 + 5.0 * torch.rand((), generator=generator).item())))
        total += lengths[-1]
    return sorted(lengths)


def throughput(teacher, lengths, batch_size) -> float:
    """Audio seconds per wall second over batches of duration-sorted utterances."""
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for first in range(0, len(lengths), batch_size):
        chunk = lengths[first : first + batch_size]
        wavs = torch.zeros(len(chunk), max(chunk))
        for row, length in enumerate(chunk):
            wavs[row, :length] = 0.1 * torch.randn(length, generator=generator)
        teacher.log_probs(wavs, torch.tensor(chunk, dtype=torch.float) / max(chunk))
    return sum(lengths) / 16000 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lengths = utterance_lengths(args.seconds)
    print(f"`python benchmarks/bench_pretrained_teachers.py --seconds {args.seconds:g} "
          f"--batch-size {args.batch_size} --threads {args.threads}`; {machine_line()}, "
          f"{args.threads} torch thread(s); {datetime.date.today()}; {len(lengths)} utterances, "
          f"{sum(lengths) / 16000:.0f} s of audio\n")
    print("| extractor | params | how it runs | audio s / s | RTF |")
    print("|---|---|---|---|---|")
    for extractor in ("group", "layer"):
        with tempfile.TemporaryDirectory() as folder:
            params = save_base_model(folder, extractor)
            teacher = HuggingFaceCTCTeacher(folder)
            throughput(teacher, lengths[:2], 2)  # warm-up
            speed = throughput(teacher, lengths, args.batch_size)
        how = "batched, attention mask" if teacher.batch_invariant else "one utterance at a time"
        print(f"| {extractor} | {params / 1e6:.1f}M | {how} | {speed:.2f} | {1 / speed:.3f} |", flush=True)


if __name__ == "__main__":
    main()
