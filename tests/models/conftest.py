"""Synthetic 'speech' for model tests: each character is a distinct tone."""

import math

import numpy as np
import pytest
import torch

TONE_HZ = {"a": 350.0, "b": 700.0, "c": 1200.0, "d": 1900.0, "e": 2900.0, "f": 4200.0}


def tone_utterance(text: str, sample_rate: int = 16000, char_s: float = 0.09, gap_s: float = 0.03,
                   seed: int = 0) -> torch.Tensor:
    """(samples,) waveform: a tone per letter, silence for spaces, short gaps, light noise."""
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(0.05 * sample_rate))]
    t = np.arange(int(char_s * sample_rate)) / sample_rate
    envelope = np.hanning(len(t)) ** 0.5
    for char in text:
        if char == " ":
            pieces.append(np.zeros(len(t)))
        else:
            pieces.append(0.3 * envelope * np.sin(2 * math.pi * TONE_HZ[char] * t))
        pieces.append(np.zeros(int(gap_s * sample_rate)))
    pieces.append(np.zeros(int(0.05 * sample_rate)))
    wav = np.concatenate(pieces)
    wav += 0.003 * rng.standard_normal(len(wav))
    return torch.tensor(wav, dtype=torch.float32)


def pad_batch(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (samples,) -> (batch, max_samples), relative lengths (batch,)."""
    longest = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), longest)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, torch.tensor([len(w) / longest for w in wavs])


@pytest.fixture
def tone_batch():
    """Four tone 'utterances' with their texts: (texts, wavs (4, samples), rel_lens (4,))."""
    texts = ["abc da", "bad cab", "fed", "cafe bead"]
    wavs, lens = pad_batch([tone_utterance(t, seed=i) for i, t in enumerate(texts)])
    return texts, wavs, lens


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run model tests on one intra-op thread and restore the setting afterwards.

    Small GRU/conv steps with two OpenMP threads become ~10x slower when the
    two cores are shared with other processes (busy-waiting threads).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
