"""Tiny model sizes and synthetic audio shared by the export tests and their fixtures."""

import functools
import math

import numpy as np
import speechbrain as sb
import torch

from speechkd.experiment import TOKENS_FILE, build_model
from speechkd.models import ARCHITECTURES
from speechkd.text import TokenInventory

TINY_SIZES = {
    "conformer": {
        "d_model": 32,
        "num_layers": 1,
        "nhead": 2,
        "d_ffn": 64,
        "kernel_size": 7,
        "conv_channels": 4,
    },
    "crdnn": {"cnn_channels": (4, 4), "rnn_layers": 1, "rnn_neurons": 16, "dnn_neurons": 24},
    "tdnn": {"channels": 24, "dilations": (1, 2)},
    "student": {
        "conv_channels": 24,
        "gru_hidden": 24,
        "subsampling": 4,
        "conv_layers": 3,
        "kernel_size": 4,
    },
}
TEXTS = ["one two", "three", "forty five", "six hundred and seven"]


def synthetic_utterance(index: int, sample_rate: int = 16000) -> np.ndarray:
    """(samples,) float32: a few tones and noise, 0.4 to 1.3 s long (odd lengths on purpose)."""
    rng = np.random.default_rng(index)
    n = int(sample_rate * (0.4 + 0.3 * index)) + 37 * index
    t = np.arange(n) / sample_rate
    wav = sum(0.1 * np.sin(2 * math.pi * f * t) for f in rng.uniform(200, 3000, size=3))
    return (wav + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_experiment(folder, arch: str, inventory: TokenInventory, wavs) -> None:
    """Untrained but normalizer-fitted model of ``arch`` saved as an experiment folder."""
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    inventory.save(folder / TOKENS_FILE)
    factory = functools.partial(ARCHITECTURES[arch], **TINY_SIZES[arch])
    model = build_model(factory, inventory, str(folder), name=f"tiny-{arch}")
    model.fit_normalizer([(torch.from_numpy(w)[None], torch.ones(1)) for w in wavs])
    checkpointer = sb.utils.checkpoints.Checkpointer(
        str(folder / "save"), recoverables={"model": model}
    )
    checkpointer.save_checkpoint(meta={"WER": 100.0})
