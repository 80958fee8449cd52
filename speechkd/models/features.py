"""Log-mel filterbank features and global mean/variance normalization.

Both modules use only ops that export to ONNX (opset 17): the framing and
DFT are one ``conv1d`` with a fixed, windowed cosine/sine basis.

Framing is causal and Kaldi-like without edge snipping: the waveform is
left-padded with ``win_length - hop_length`` zeros (240 samples by default)
so that frame ``t`` covers samples ``[t * hop - 240, t * hop + 160)`` and an
input of ``n`` samples gives exactly ``n // hop_length`` frames. Frame ``t``
needs no sample later than ``(t + 1) * hop_length``, which makes chunked
(streaming) extraction exact: feed each chunk of ``k * hop_length`` new
samples together with the :attr:`LogMelFilterbank.context_samples` samples
that precede it (zeros before the start) and ``pad=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torchaudio
from torch import nn


class LogMelFilterbank(nn.Module):
    """Log-mel filterbank energies from raw waveforms.

    Parameters
    ----------
    sample_rate : int
        Input sample rate in Hz.
    n_mels : int
        Number of mel bands.
    win_ms, hop_ms : float
        Analysis window and hop in milliseconds (25 and 10).
    n_fft : int or None
        DFT size (>= window length); default: next power of two.
    f_min, f_max : float
        Mel filterbank range in Hz; ``f_max=None`` means Nyquist.
    log_floor : float
        Mel energies are clamped to at least this before the log.
    use_fft : bool
        In eager mode compute the spectrum with ``torch.fft.rfft`` (about 3x
        faster on CPU). While tracing / exporting (ONNX, TorchScript) the
        ``conv1d`` DFT path is always used; both agree to ~1e-5.

    Example
    -------
    >>> fbank = LogMelFilterbank()
    >>> fbank(torch.zeros(2, 16000)).shape
    torch.Size([2, 100, 80])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 20.0,
        f_max: float | None = None,
        log_floor: float = 1e-6,
        use_fft: bool = True,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = round(sample_rate * win_ms / 1000)
        self.hop_length = round(sample_rate * hop_ms / 1000)
        if self.hop_length > self.win_length:
            raise ValueError(f"hop ({hop_ms} ms) longer than window ({win_ms} ms)")
        self.n_fft = n_fft or 2 ** math.ceil(math.log2(self.win_length))
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft={self.n_fft} shorter than the window ({self.win_length})")
        self.log_floor = log_floor
        self.use_fft = use_fft
        n_freqs = self.n_fft // 2 + 1
        self.register_buffer("dft_basis", self._windowed_dft_basis(n_freqs), persistent=False)
        mel = torchaudio.functional.melscale_fbanks(
            n_freqs=n_freqs,
            f_min=f_min,
            f_max=f_max or sample_rate / 2,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm=None,
            mel_scale="htk",
        )
        self.register_buffer("mel_matrix", mel, persistent=False)  # (n_freqs, n_mels)
        window = torch.hann_window(self.win_length, periodic=True)
        self.register_buffer("window", window, persistent=False)

    def _windowed_dft_basis(self, n_freqs: int) -> torch.Tensor:
        """Conv1d weight (2 * n_freqs, 1, win_length): Hann-windowed cos rows then sin rows."""
        window = torch.hann_window(self.win_length, periodic=True, dtype=torch.float64)
        n = torch.arange(self.win_length, dtype=torch.float64)
        k = torch.arange(n_freqs, dtype=torch.float64)
        angle = 2 * math.pi * k[:, None] * n[None, :] / self.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
        return basis.unsqueeze(1).float()

    @property
    def context_samples(self) -> int:
        """Samples of left context a streaming chunk needs (``win_length - hop_length``)."""
        return self.win_length - self.hop_length

    def num_frames(self, n_samples: int) -> int:
        """Frames produced for an unpadded input of ``n_samples`` samples."""
        return n_samples // self.hop_length

    def forward(self, wavs: torch.Tensor, pad: bool = True) -> torch.Tensor:
        """Compute log-mel features.

        Parameters
        ----------
        wavs : torch.Tensor
            (batch, samples) float waveforms.
        pad : bool
            Left-pad with :attr:`context_samples` zeros (whole utterance). Use
            ``False`` for a streaming chunk that already starts with its
            context samples.

        Returns
        -------
        torch.Tensor
            (batch, frames, n_mels) with ``frames = samples // hop_length``
            (``(samples - context_samples) // hop_length`` when ``pad=False``).
        """
        if pad:
            wavs = nn.functional.pad(wavs, (self.context_samples, 0))
        if self.use_fft and not _exporting():
            power = self._power_fft(wavs)
        else:
            power = self._power_conv(wavs)
        mel = torch.matmul(power, self.mel_matrix)
        return torch.log(torch.clamp(mel, min=self.log_floor))

    def _power_conv(self, wavs: torch.Tensor) -> torch.Tensor:
        """(batch, samples) already padded -> (batch, frames, n_freqs) power via conv1d DFT."""
        spec = nn.functional.conv1d(wavs.unsqueeze(1), self.dft_basis, stride=self.hop_length)
        real, imag = spec.chunk(2, dim=1)
        return (real * real + imag * imag).transpose(1, 2)

    def _power_fft(self, wavs: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`_power_conv` with unfold + rfft."""
        frames = wavs.unfold(1, self.win_length, self.hop_length) * self.window
        spec = torch.fft.rfft(frames, n=self.n_fft)
        return spec.real * spec.real + spec.imag * spec.imag


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()


class GlobalNormalizer(nn.Module):
    """Per-mel-band mean/std normalization with checkpointed statistics.

    ``mean``, ``std`` and ``fitted`` are buffers, so they travel with the
    state dict. Before :meth:`fit` the module is the identity.

    Parameters
    ----------
    n_mels : int
        Feature dimension.
    min_std : float
        Lower bound on the fitted standard deviation (silent bands).
    """

    def __init__(self, n_mels: int = 80, min_std: float = 1e-3):
        super().__init__()
        self.min_std = min_std
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit(self, feature_batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set mean/std from the valid frames of ``(feats, rel_lens)`` batches.

        Parameters
        ----------
        feature_batches : iterable of (torch.Tensor, torch.Tensor)
            Un-normalized feats (batch, frames, n_mels) and relative lengths
            (batch,) in (0, 1].
        """
        total = torch.zeros_like(self.mean, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for feats, lens in feature_batches:
            mask = relative_lengths_to_mask(lens, feats.shape[1]).unsqueeze(-1)
            valid = feats.double() * mask
            total += valid.sum(dim=(0, 1))
            total_sq += (valid * valid).sum(dim=(0, 1))
            count += int(mask.sum())
        if count == 0:
            raise ValueError("GlobalNormalizer.fit got no valid frames")
        mean = total / count
        var = (total_sq / count - mean * mean).clamp(min=0)
        self.mean.copy_(mean.float())
        self.std.copy_(var.sqrt().clamp(min=self.min_std).float())
        self.fitted.fill_(True)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mels) -> same shape, normalized."""
        return (feats - self.mean) / self.std


def relative_lengths_to_absolute(rel_lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Relative lengths (batch,) in (0, 1] -> absolute int64 lengths, ``round(rel * max_len)``.

    The one place speechkd turns SpeechBrain's relative lengths into frames or
    samples. Integer input is taken as already absolute and returned as int64.
    """
    if not rel_lens.is_floating_point():
        return rel_lens.long()
    return torch.round(rel_lens.float() * max_len).long().clamp(0, max_len)


def relative_lengths_to_mask(rel_lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) relative (float) or absolute (int64) lengths -> (batch, max_len) float mask, 1 on valid frames."""
    abs_lens = relative_lengths_to_absolute(rel_lens, max_len)
    steps = torch.arange(max_len, device=rel_lens.device)
    return (steps[None, :] < abs_lens[:, None]).float()
