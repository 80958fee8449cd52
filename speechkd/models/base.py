"""The acoustic-model base class shared by every teacher and student.

An :class:`AcousticModel` takes raw 16 kHz waveforms with SpeechBrain-style
relative lengths, computes normalized log-mel features itself
(:meth:`AcousticModel.featurize`), runs an encoder that subsamples time by
``subsampling`` and ends in a CTC linear layer (:meth:`AcousticModel.encode`),
and declares its output frame shift in ms.

Time subsampling is always a chain of stride-2 stages that map ``n`` frames
to ``ceil(n / 2)``, so ``output_frames(n_samples) ==
ceil((n_samples // 160) / subsampling)`` exactly for every architecture.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from speechkd.models.augment import spec_augment as augment_features
from speechkd.models.features import (
    GlobalNormalizer,
    LogMelFilterbank,
    relative_lengths_to_absolute,
    relative_lengths_to_mask,
)

ALLOWED_SUBSAMPLING = (1, 2, 4, 8)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def subsampling_stages(subsampling: int) -> int:
    """Number of stride-2 stages for ``subsampling`` (a power of two up to 8)."""
    if subsampling not in ALLOWED_SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {ALLOWED_SUBSAMPLING}, got {subsampling}")
    return int(math.log2(subsampling))


class AcousticModel(nn.Module):
    """Base class: waveform -> normalized log-mel -> encoder -> CTC logits.

    Parameters
    ----------
    n_tokens : int
        Size of the CTC output layer (token inventory incl. blank).
    n_mels : int
        Mel bands of the feature front-end.
    subsampling : int
        Time subsampling of the encoder (1, 2, 4 or 8); the output frame
        shift is ``10 * subsampling`` ms.
    sample_rate : int
        Input sample rate (16000).
    f_max : float or None
        Top of the mel filterbank in Hz; ``None``: Nyquist (8 kHz). ``3800`` gives a
        telephone-band front-end whose features are the same for 8 kHz audio
        upsampled and for 16 kHz audio (RESULTS.md: it lowered the real-speech CER).
    """

    def __init__(
        self,
        n_tokens: int,
        n_mels: int = 80,
        subsampling: int = 2,
        sample_rate: int = 16000,
        f_max: float | None = None,
    ):
        super().__init__()
        if n_tokens < 2:
            raise ValueError(f"n_tokens must be >= 2 (blank + one symbol), got {n_tokens}")
        self.n_tokens = n_tokens
        self.n_mels = n_mels
        self.subsampling = subsampling
        self.n_stages = subsampling_stages(subsampling)
        self.sample_rate = sample_rate
        self.features = LogMelFilterbank(sample_rate=sample_rate, n_mels=n_mels, f_max=f_max)
        self.normalizer = GlobalNormalizer(n_mels)

    @property
    def frame_shift_ms(self) -> int:
        """Output frame shift in milliseconds (``10 * subsampling``)."""
        return round(1000 * self.features.hop_length * self.subsampling / self.sample_rate)

    @property
    def normalizer_fitted(self) -> bool:
        return self.normalizer.is_fitted

    def output_frames(self, n_samples: int) -> int:
        """Exact output frames for an unpadded input of ``n_samples`` samples."""
        return int(self.output_lengths(torch.tensor([int(n_samples)]), int(n_samples))[0])

    def feature_lengths(self, wav_lens: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Valid feature frames (batch,) int64 of a padded batch: each utterance's samples // hop.

        Parameters
        ----------
        wav_lens : torch.Tensor
            (batch,) relative lengths in (0, 1], or absolute sample counts (int64).
        n_samples : int
            Padded waveform length (``wavs.shape[1]``).
        """
        abs_samples = relative_lengths_to_absolute(wav_lens, n_samples)
        return torch.div(abs_samples, self.features.hop_length, rounding_mode="floor")

    def output_lengths(self, wav_lens: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Absolute output frames (batch,) int64 of a padded batch of ``n_samples`` columns.

        The one place the valid output frames of an utterance are computed:
        from its own sample count, never from the padded batch, so decoding
        and losses see the same frames at any batch size.

        Parameters
        ----------
        wav_lens : torch.Tensor
            (batch,) relative lengths in (0, 1], or absolute sample counts (int64).
        n_samples : int
            Padded waveform length (``wavs.shape[1]``).
        """
        return subsampled_lengths(self.feature_lengths(wav_lens, n_samples), self.n_stages)

    def logmel(self, wavs: torch.Tensor) -> torch.Tensor:
        """Un-normalized log-mel features: (batch, samples) -> (batch, frames, n_mels)."""
        return self.features(wavs)

    def featurize(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        """Normalized log-mel features, zero beyond each utterance's length.

        Parameters
        ----------
        wavs : torch.Tensor
            (batch, samples) float32 waveforms at :attr:`sample_rate`.
        wav_lens : torch.Tensor
            (batch,) relative lengths in (0, 1].

        Returns
        -------
        torch.Tensor
            (batch, frames, n_mels); the relative lengths stay ``wav_lens``.

        Raises
        ------
        ValueError
            If the batch is shorter than one hop (no feature frame).
        """
        if wavs.shape[-1] < self.features.hop_length:
            raise ValueError(
                f"waveform of {wavs.shape[-1]} samples is shorter than one feature hop "
                f"({self.features.hop_length} samples)"
            )
        feats = self.normalizer(self.logmel(wavs))
        mask = relative_lengths_to_mask(self.feature_lengths(wav_lens, wavs.shape[1]), feats.shape[1])
        return feats * mask.unsqueeze(-1)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        """Encoder + CTC layer.

        Parameters
        ----------
        feats : torch.Tensor
            (batch, frames, n_mels) normalized features.
        feat_lens : torch.Tensor
            (batch,) int64 valid feature frames (:meth:`feature_lengths`);
            after each stride-2 stage an encoder masks with
            :func:`subsampled_lengths` of them, so padding never leaks into
            valid frames.

        Returns
        -------
        torch.Tensor
            (batch, ceil(frames / subsampling), n_tokens) unnormalized logits,
            valid up to :meth:`output_lengths`.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement encode()")

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor, spec_augment: bool = False) -> torch.Tensor:
        """(batch, samples), (batch,) -> (batch, out_frames, n_tokens) CTC log-probabilities.

        Everything a training step needs runs here (so a DDP wrapper sees it);
        ``spec_augment`` masks time and frequency bands of the features
        (:func:`speechkd.models.augment.spec_augment`), for training.
        """
        feats = self.featurize(wavs, wav_lens)
        feat_lens = self.feature_lengths(wav_lens, wavs.shape[1])
        if spec_augment:
            feats = augment_features(feats, feat_lens)
        logits = self.encode(feats, feat_lens)
        return torch.log_softmax(logits, dim=-1)

    def layer_taps(self) -> dict[str, tuple[nn.Module, str]]:
        """The named intermediate layers a distillation term may read (hint, relational, ...).

        Returns
        -------
        dict
            Name -> ``(submodule, layout)``: ``"input"`` (the submodule's first
            input, ``(batch, time, dim)``), ``"output"`` (its output, or the
            first item of a tuple output, ``(batch, time, dim)``) or
            ``"output_channels_first"`` (``(batch, dim, time)``). Every model has
            ``encoder``, the input of its CTC layer, at the output frame rate;
            subclasses add their own layers (:class:`speechkd.models.layers.LayerRecorder`
            records them during ``forward``).
        """
        return {"encoder": (self.ctc_lin, "input")}

    @torch.no_grad()
    def fit_normalizer(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fit the global mean/std buffers.

        Parameters
        ----------
        batches : iterable of (torch.Tensor, torch.Tensor)
            Either un-normalized features ``(feats (batch, frames, n_mels),
            rel_lens)`` as given by :meth:`logmel`, or raw audio ``(wavs
            (batch, samples), rel_lens)``; 2-D inputs are treated as audio. They
            are moved to the model's device (a data loader gives CPU tensors).
        """
        device = self.normalizer.mean.device

        def as_features():
            for x, lens in batches:
                x, lens = x.to(device), lens.to(device)
                if x.dim() == 2:  # audio: exact feature frames per utterance
                    yield self.logmel(x), self.feature_lengths(lens, x.shape[1])
                else:
                    yield x, lens

        self.normalizer.fit(as_features())


def subsampled_lengths(frames: torch.Tensor, n_stages: int) -> torch.Tensor:
    """Valid frames after ``n_stages`` stride-2 stages, each mapping ``n`` to ``ceil(n / 2)``.

    Parameters
    ----------
    frames : torch.Tensor
        (batch,) int64 valid frames before the stages.
    n_stages : int
    """
    if frames.is_floating_point():
        raise TypeError("subsampled_lengths takes absolute frame counts (int64), got relative lengths: "
                        "use AcousticModel.feature_lengths")
    for _ in range(n_stages):
        frames = torch.div(frames + 1, 2, rounding_mode="floor")
    return frames


def mask_time(x: torch.Tensor, lengths: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
    """Zero ``x`` beyond each utterance's length along ``time_dim`` (dim 0 = batch).

    ``lengths`` are absolute frames at ``x``'s rate (int64), or relative lengths.
    """
    mask = relative_lengths_to_mask(lengths, x.shape[time_dim]).to(x.dtype)
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = x.shape[0], x.shape[time_dim]
    return x * mask.view(shape)


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) absolute (int64) or relative lengths -> (batch, max_len) bool, True on padding."""
    return relative_lengths_to_mask(lengths, max_len) == 0
