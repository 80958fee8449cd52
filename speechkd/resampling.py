"""Resampling shared by corpus preparation and the torch-free runtime (numpy only; soxr when installed).

Importing this module never imports torch: :mod:`speechkd.export.runtime`
uses it.
"""

from __future__ import annotations

import numpy as np


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono waveform with soxr when it is installed, else by FFT.

    Parameters
    ----------
    audio : np.ndarray
        (samples,) float32.
    rate_in, rate_out : int
        Sample rates in Hz.

    Returns
    -------
    np.ndarray
        (round(samples * rate_out / rate_in),) float32.
    """
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    try:
        import soxr
    except ImportError:
        return _fft_resample(audio, rate_in, rate_out)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)


def _fft_resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by truncating / zero-padding the spectrum (numpy only)."""
    n_out = round(len(audio) * rate_out / rate_in)
    spectrum = np.fft.rfft(audio.astype(np.float64))
    n_bins = n_out // 2 + 1
    if n_bins <= len(spectrum):
        spectrum = spectrum[:n_bins]
    else:
        spectrum = np.concatenate(
            [spectrum, np.zeros(n_bins - len(spectrum), dtype=spectrum.dtype)]
        )
    return (np.fft.irfft(spectrum, n=n_out) * (n_out / len(audio))).astype(np.float32)
