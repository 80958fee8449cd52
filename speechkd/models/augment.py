"""SpecAugment-style time and frequency masking."""

from __future__ import annotations

import torch

from speechkd.models.features import relative_lengths_to_absolute


def _random_ints(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform integers in [0, high) elementwise (high >= 1), float tensor in, long out."""
    u = torch.rand(high.shape, generator=generator)
    return torch.floor(u * high).long()


def spec_augment(
    feats: torch.Tensor,
    lens: torch.Tensor,
    n_freq_masks: int = 2,
    max_freq_width: int = 10,
    n_time_masks: int = 2,
    max_time_width: int = 20,
    max_time_ratio: float = 0.2,
    mask_value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask random frequency bands and time spans of each utterance.

    Parameters
    ----------
    feats : torch.Tensor
        (batch, frames, n_mels) normalized features (0 is the mean).
    lens : torch.Tensor
        (batch,) relative lengths, or absolute valid frames (int64); time masks stay inside the valid frames.
    n_freq_masks, max_freq_width : int
        Number of frequency masks per utterance and their maximum width (bands).
    n_time_masks, max_time_width : int
        Number of time masks per utterance and their maximum width (frames).
    max_time_ratio : float
        A time mask is also at most this fraction of the utterance's length.
    mask_value : float
        Value written into masked cells.
    generator : torch.Generator or None
        Source of randomness (CPU), for reproducible tests.

    Returns
    -------
    torch.Tensor
        A masked copy, (batch, frames, n_mels).
    """
    batch, frames, n_mels = feats.shape
    keep = torch.ones(batch, frames, n_mels, dtype=torch.bool)
    bands = torch.arange(n_mels)
    for _ in range(n_freq_masks):
        width = _random_ints(torch.full((batch,), float(min(max_freq_width, n_mels) + 1)), generator)
        start = _random_ints((n_mels - width + 1).float(), generator)
        band_mask = (bands[None, :] >= start[:, None]) & (bands[None, :] < (start + width)[:, None])
        keep &= ~band_mask[:, None, :]
    valid = relative_lengths_to_absolute(lens.cpu(), frames)
    steps = torch.arange(frames)
    for _ in range(n_time_masks):
        limit = torch.minimum(torch.full_like(valid, max_time_width), (valid * max_time_ratio).long())
        width = _random_ints((limit + 1).float(), generator)
        start = _random_ints((valid - width + 1).clamp(min=1).float(), generator)
        span = (steps[None, :] >= start[:, None]) & (steps[None, :] < (start + width)[:, None])
        keep &= ~span[:, :, None]
    keep = keep.to(feats.device)
    return torch.where(keep, feats, torch.full_like(feats, mask_value))
