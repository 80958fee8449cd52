"""Seeded, length-preserving acoustic domain transforms of clean 16 kHz speech.

Domains: ``clean`` (identity), ``telephone`` (band limit, 8 kHz mu-law
codec), ``noise`` (additive noise at a drawn SNR) and ``reverb`` (synthetic
room impulse response with a drawn RT60). A combination such as
``telephone+noise`` applies its parts left to right.

Every transform keeps the number of samples and the timing (zero-phase
filters, impulse responses with the direct path at lag 0), so a transformed
utterance stays frame-aligned with its clean original: the parallel data
the domain-adaptation recipes distil on.

The randomness of a transform depends only on ``(seed, utt_id, domain,
epoch)`` through a SHA-256 hash, never on Python's ``hash()`` or on call
order. ``epoch=None`` gives the version stored in the corpus; training may
pass the epoch number to draw a fresh SNR or room per epoch.

Example
-------
>>> import numpy as np
>>> wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
>>> out = apply_domain(wav, 16000, "telephone+noise", seed=0, utt_id="en-m3r160p45-00001")
>>> out.shape
(16000,)
"""

from __future__ import annotations

import hashlib

import numpy as np

BASE_DOMAINS = ("clean", "telephone", "noise", "reverb")
NOISE_TYPES = ("white", "pink", "brown", "babble")
TELEPHONE_RATE = 8000

DEFAULT_OPTIONS = {
    "low_hz": (250.0, 350.0),
    "high_hz": (3100.0, 3400.0),
    "codec_gain_db": (-12.0, 0.0),
    "snr_db": (0.0, 20.0),
    "noise_types": NOISE_TYPES,
    "rt60_s": (0.2, 0.8),
    "drr_db": (0.0, 10.0),
}
"""Default options of the transforms; a pair ``(lo, hi)`` is drawn uniformly, a number is fixed."""

TRANSFORM_OPTIONS = {
    "clean": (),
    "telephone": ("low_hz", "high_hz", "codec_gain_db"),
    "noise": ("snr_db", "noise_types"),
    "reverb": ("rt60_s", "drr_db"),
}


def parse_domain(domain: str) -> tuple[str, ...]:
    """Split ``"telephone+noise"`` into its parts, checking every part is known."""
    parts = tuple(domain.split("+"))
    unknown = [part for part in parts if part not in BASE_DOMAINS]
    if not domain or unknown:
        raise ValueError(f"unknown domain {domain!r} (parts {unknown}); domains are "
                         f"{', '.join(BASE_DOMAINS)} or combinations joined by '+'")
    if "clean" in parts and len(parts) > 1:
        raise ValueError(f"'clean' cannot be combined with other domains: {domain!r}")
    return parts


def domain_rng(seed: int, utt_id: str, domain: str, epoch: int | None = None
               ) -> np.random.Generator:
    """Random generator depending only on ``(seed, utt_id, domain, epoch)``."""
    epoch_key = "corpus" if epoch is None else f"epoch{int(epoch)}"
    key = "\x1f".join((str(int(seed)), utt_id, domain, epoch_key)).encode("utf-8")
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def draw(value, rng: np.random.Generator) -> float:
    """A number as is, or a uniform draw from a ``(lo, hi)`` pair."""
    if np.ndim(value) == 0:
        return float(value)
    low, high = value
    return float(rng.uniform(low, high))


def _bandpass(wav: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, wav) if len(wav) > 30 else wav


def mu_law_codec(wav: np.ndarray, mu: int = 255) -> np.ndarray:
    """Encode to 8-bit mu-law and decode again (G.711-like quantization).

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``, values in ``[-1, 1]`` (clipped outside).
    """
    x = np.clip(wav, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    codes = np.round((compressed + 1.0) / 2.0 * mu)
    decoded = codes / mu * 2.0 - 1.0
    return np.sign(decoded) * np.expm1(np.abs(decoded) * np.log1p(mu)) / mu


def telephone(wav: np.ndarray, sr: int, rng: np.random.Generator,
              low_hz=DEFAULT_OPTIONS["low_hz"], high_hz=DEFAULT_OPTIONS["high_hz"],
              codec_gain_db=DEFAULT_OPTIONS["codec_gain_db"], codec=mu_law_codec) -> np.ndarray:
    """Narrow-band telephone channel: band-pass, 8 kHz mu-law codec, band-pass, back to ``sr``.

    The signal is band-passed to ``[low_hz, high_hz]`` (drawn), resampled to
    8 kHz, scaled by ``codec_gain_db`` (drawn; sets how coarse the
    quantization is), mu-law coded, scaled back, resampled to ``sr`` and
    band-passed again, all zero-phase.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.
    codec : callable
        8 kHz samples ``(n,)`` in ``[-1, 1]`` -> decoded ``(n,)``; default
        :func:`mu_law_codec` (other codecs: :mod:`speechkd.data.augment`).

    Returns
    -------
    np.ndarray
        Shape ``(samples,)``, float32.
    """
    from scipy.signal import resample_poly

    low, high, gain = draw(low_hz, rng), draw(high_hz, rng), 10 ** (draw(codec_gain_db, rng) / 20)
    narrow = resample_poly(_bandpass(wav, sr, low, high), TELEPHONE_RATE, sr)
    coded = codec(narrow * gain) / gain
    wide = resample_poly(coded, sr, TELEPHONE_RATE)
    wide = np.pad(wide, (0, max(0, len(wav) - len(wide))))[: len(wav)]
    return _bandpass(wide, sr, low, high).astype(np.float32)


def coloured_noise(n_samples: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Zero-mean, unit-RMS Gaussian noise with power ~ ``1 / f**exponent``.

    ``exponent`` 0 is white, 1 pink, 2 brown noise.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples)
    freqs[0] = 1.0
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n_samples)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def babble_noise(wav: np.ndarray, rng: np.random.Generator, talkers: tuple = (3, 7)
                 ) -> np.ndarray:
    """Speech-like babble from the utterance itself: a sum of reversed, shifted copies."""
    n_talkers = int(rng.integers(talkers[0], talkers[1]))
    reversed_speech = wav[::-1].astype(np.float64)
    babble = np.zeros(len(wav))
    for _ in range(n_talkers):
        babble += np.roll(reversed_speech, int(rng.integers(0, len(wav)))) * rng.uniform(0.5, 1)
    return babble / (np.sqrt(np.mean(babble ** 2)) + 1e-12)


def add_noise(wav: np.ndarray, sr: int, rng: np.random.Generator,
              snr_db=DEFAULT_OPTIONS["snr_db"], noise_types=DEFAULT_OPTIONS["noise_types"]
              ) -> np.ndarray:
    """Add noise of a drawn type at a drawn signal-to-noise ratio.

    The SNR is the ratio of the utterance's mean power (the whole trimmed
    utterance) to the noise's mean power, in dB.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.
    snr_db : float or (float, float)
        Fixed SNR, or range drawn uniformly.
    noise_types : sequence of str
        Types to draw from: ``white``, ``pink``, ``brown``, ``babble``.

    Returns
    -------
    np.ndarray
        Shape ``(samples,)``, float32 (not clipped).
    """
    snr = draw(snr_db, rng)
    unknown = sorted(set(noise_types) - set(NOISE_TYPES))
    if unknown or not noise_types:
        raise ValueError(f"unknown noise types {unknown}; choose from {NOISE_TYPES}")
    kind = noise_types[int(rng.integers(len(noise_types)))]
    if kind == "babble":
        noise = babble_noise(wav, rng)
    else:
        noise = coloured_noise(len(wav), rng, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    speech_power = float(np.mean(np.square(wav, dtype=np.float64)))
    noise = noise * np.sqrt(speech_power / 10 ** (snr / 10))
    return (wav + noise).astype(np.float32)


def room_impulse_response(sr: int, rng: np.random.Generator, rt60_s: float, drr_db: float
                          ) -> np.ndarray:
    """Exponentially decaying Gaussian-noise RIR with a unit direct path at lag 0.

    The tail starts 2 to 10 ms after the direct path, decays by 60 dB in
    ``rt60_s`` seconds and is scaled so that direct / reverberant energy is
    ``drr_db``.

    Returns
    -------
    np.ndarray
        Shape ``(taps,)`` with ``taps = sr * rt60_s`` (at least 1 tap).
    """
    taps = max(2, int(sr * rt60_s))
    t = np.arange(taps) / sr
    tail = rng.standard_normal(taps) * 10 ** (-3 * t / rt60_s)
    tail[: int(sr * rng.uniform(0.002, 0.010))] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))
    tail[0] = 1.0
    return tail


def reverberate(wav: np.ndarray, sr: int, rng: np.random.Generator,
                rt60_s=DEFAULT_OPTIONS["rt60_s"], drr_db=DEFAULT_OPTIONS["drr_db"]) -> np.ndarray:
    """Convolve with a synthetic room impulse response; output cut to the input length.

    The result is rescaled to the input's RMS level.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.
    rt60_s, drr_db : float or (float, float)
        Reverberation time and direct-to-reverberant ratio, fixed or drawn.

    Returns
    -------
    np.ndarray
        Shape ``(samples,)``, float32.
    """
    from scipy.signal import fftconvolve

    rir = room_impulse_response(sr, rng, draw(rt60_s, rng), draw(drr_db, rng))
    wet = fftconvolve(wav.astype(np.float64), rir)[: len(wav)]
    scale = np.sqrt(np.mean(np.square(wav, dtype=np.float64)) / (np.mean(wet ** 2) + 1e-20))
    return (wet * scale).astype(np.float32)


TRANSFORMS = {"telephone": telephone, "noise": add_noise, "reverb": reverberate}


def apply_domain(wav: np.ndarray, sr: int, domain: str, seed: int, utt_id: str,
                 epoch: int | None = None, **options) -> np.ndarray:
    """Transform a clean utterance into ``domain``, reproducibly.

    Parameters
    ----------
    wav : np.ndarray
        Clean audio, shape ``(samples,)``.
    sr : int
        Sample rate (16000 in the corpus).
    domain : str
        ``clean``, ``telephone``, ``noise``, ``reverb`` or a ``+``-joined chain.
    seed : int
        Corpus seed.
    utt_id : str
        Utterance ID; with ``seed``, ``domain`` and ``epoch`` it fixes the draw.
    epoch : int or None
        None gives the corpus version; an int mixes the epoch into the seed.
    **options
        Overrides of :data:`DEFAULT_OPTIONS` (e.g. ``snr_db=(5, 15)``); options
        of transforms not in ``domain`` are ignored, unknown names rejected.

    Returns
    -------
    np.ndarray
        Shape ``(samples,)``, float32.
    """
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown domain options {unknown}; known: {sorted(DEFAULT_OPTIONS)}")
    parts = parse_domain(domain)
    out = np.asarray(wav, dtype=np.float32)
    if parts == ("clean",):
        return out.copy()
    rng = domain_rng(seed, utt_id, domain, epoch)
    for part in parts:
        kwargs = {name: options[name] for name in TRANSFORM_OPTIONS[part] if name in options}
        out = TRANSFORMS[part](out, sr, rng, **kwargs)
    return out
