"""Test-only plug-ins: one new file each would be in a user's project (see test_seams.py).

- :class:`RandomTeacher`: a frozen random model with its own inventory
  (blank last, named ``<pad>``, ``|`` between words) and a 10 ms frame shift;
- :class:`FrameEntropy`: an objective term (mean per-frame entropy of the student);
- :func:`prepare_first_rows`: a prepare function writing manifests from another corpus.
"""

import os

import torch

from speechkd.data.manifest import read_manifest, write_manifest
from speechkd.distill import ObjectiveTerm, Teacher
from speechkd.distill.cache import fingerprint_module
from speechkd.models.features import relative_lengths_to_absolute


class RandomTeacher(Teacher):
    """Frozen random framewise linear model over 10 ms waveform frames (160 samples at 16 kHz)."""

    def __init__(self, letters="abcdefghijklmnopqrstuvwxyz", seed=0, name="random"):
        generator = torch.Generator().manual_seed(seed)
        self.name = name
        self.symbols = ["|", *letters, "<pad>"]
        self.blank_index = len(self.symbols) - 1
        self.word_delimiter = "|"
        self.frame_shift_ms = 10
        self.layer = torch.nn.Linear(160, len(self.symbols)).requires_grad_(False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(self.layer.weight.shape, generator=generator))

    def forward_log_probs(self, wavs, wav_lens):
        frames = wavs.shape[1] // 160
        x = wavs[:, : frames * 160].reshape(wavs.shape[0], frames, 160)
        return self.layer(x).log_softmax(-1), relative_lengths_to_absolute(wav_lens, frames)

    def fingerprint(self):
        return fingerprint_module(self.layer)


class FrameEntropy(ObjectiveTerm):
    """Mean entropy of the student's per-frame distribution over valid frames (a confidence penalty)."""

    def forward(self, batch):
        entropy = -(batch.log_probs.exp() * batch.log_probs).sum(-1)
        weight = batch.valid.to(entropy.dtype)
        return (entropy * weight).sum() / weight.sum()


def prepare_first_rows(source, out, rows=20):
    """Write train/dev/test manifests holding the first ``rows`` rows of ``source``'s (audio paths made absolute)."""
    os.makedirs(out, exist_ok=True)
    for split in ("train", "dev", "test"):
        kept = read_manifest(os.path.join(source, f"{split}.csv"))[:rows]
        for row in kept:
            row["wav"] = row["wav"].replace("$data_root", os.path.abspath(source))
        write_manifest(os.path.join(out, f"{split}.csv"), kept)
