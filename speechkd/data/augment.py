"""Per-utterance acoustic augmentation applied when the corpus is built.

An :class:`Augmentation` is a chain of effects, each with a probability
``p`` and the ranges its parameters are drawn from, declared as a dict
(the ``augment:`` option of :func:`speechkd.data.corpus.build_corpus`, the
``corpus_augment`` key of ``hparams/common/corpus.yaml``)::

    {preset: full, speed: {p: 0.5, range: [0.9, 1.1]}, telephone: {p: 0.4}}

or as a preset name (:data:`PRESETS`: ``none``, ``light``, ``telephone``,
``full``). An effect not named never runs; a named one keeps the defaults
it does not override (a bare number is its ``p``). A dict given on a
recipe's command line is merged into the YAML's (hyperpyyaml), so
``--corpus_augment="{speed: {p: 0.8}}"`` changes one effect of the
quickstart's ``{preset: telephone}``; a preset name replaces it. Effects run in the order of :data:`EFFECTS`: speaker (speed,
pitch, vocal-tract length), room (reverb, noise), channel (telephone at
8 kHz with a codec, wideband lossy codec), recording level (gain with or
without clipping, DC offset). The output is always 16 kHz: narrowband audio
is upsampled again, as a telephone front-end would.

Every draw depends only on ``(seed, utt_id, effect)`` through SHA-256
(:func:`speechkd.data.domains.domain_rng`): the same seed gives a
byte-identical corpus, and changing one effect's settings never changes
another effect's draws. :meth:`Augmentation.plan` gives what was applied to
an utterance, with its parameters, without touching audio; the corpus
builder writes it to ``augment.csv``.

Library use: speed goes through the project's resampler (soxr) and
noise, reverberation and the telephone channel reuse
:mod:`speechkd.data.domains`; G.711 (A-law, mu-law), GSM 6.10, Opus,
Vorbis and MP3 run through libsndfile in memory. Pitch shift and
vocal-tract-length perturbation are a hand-written phase vocoder that warps
the frequency axis: ``torchaudio.functional.pitch_shift`` builds a
polyphase kernel from ``gcd(sr, sr * 2**(k/12))`` and takes ~30 s for one
2 s utterance, SpeechBrain 1.1 has no pitch or VTLP effect on waveforms,
and its ``SpeedPerturb``/``AddNoise`` draw from torch's global generator.

Example
-------
>>> import numpy as np
>>> aug = Augmentation.from_config({"speed": {"p": 1.0, "range": [1.1, 1.1]}})
>>> aug.apply(np.zeros(16500, dtype=np.float32), 16000, seed=0, utt_id="en-x-00001").shape
(15000,)
>>> aug.plan(seed=0, utt_id="en-x-00001")
{'speed': {'factor': 1.1}}
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from speechkd.data import domains

CODECS = {
    "ulaw": ("WAV", "ULAW"),
    "alaw": ("WAV", "ALAW"),
    "gsm": ("WAV", "GSM610"),
    "opus": ("OGG", "OPUS"),
    "vorbis": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
"""Codec name -> libsndfile ``(format, subtype)``; the last three are lossy with a bitrate."""

LOSSY_CODECS = ("opus", "vorbis", "mp3")


def _uniform(rng: np.random.Generator, value, digits: int = 4) -> float:
    """A fixed number or a uniform draw from ``[lo, hi]``, rounded for the record."""
    return round(domains.draw(value, rng), digits)


def codec_round_trip(wav: np.ndarray, sr: int, codec: str, compression: float = 0.5
                     ) -> np.ndarray:
    """Encode with libsndfile to memory and decode again.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``, float, clipped to ``[-1, 1]`` by the encoder.
    sr : int
        Sample rate the codec runs at (GSM 6.10 only at 8000).
    codec : str
        A key of :data:`CODECS`.
    compression : float
        libsndfile's compression level in ``[0, 1]`` for the lossy codecs
        (1 = lowest bitrate, used as 0.99); ignored by G.711 and GSM.

    Returns
    -------
    np.ndarray
        Shape ``(samples,)`` (decoder padding cut, missing samples zero), float32.
    """
    import soundfile as sf

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; codecs are {', '.join(CODECS)}")
    file_format, subtype = CODECS[codec]
    # libsndfile's MP3 encoder refuses level 1.0; 0.99 is its lowest bitrate
    level = min(float(compression), 0.99) if codec in LOSSY_CODECS else None
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wav, -1.0, 1.0).astype(np.float32), sr, format=file_format,
             subtype=subtype, compression_level=level)
    buffer.seek(0)
    decoded = sf.read(buffer, dtype="float32")[0]
    return np.pad(decoded, (0, max(0, len(wav) - len(decoded))))[: len(wav)]


def warp_frequencies(wav: np.ndarray, sr: int, warp, n_fft: int = 512, hop: int = 128
                     ) -> np.ndarray:
    """Move every spectral component from frequency f to ``warp(f)``, keeping the timing.

    A phase vocoder: the STFT's magnitudes are read at the inverse-warped
    frequency of each output bin, and each bin's phase advances by the
    warped instantaneous frequency of its source, so a sine of frequency f
    comes out as a sine of ``warp(f)`` of the same length and within ~2 dB
    of its level (interpolated magnitudes narrow or widen a partial's lobe).

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.
    warp : callable
        Monotonic map of frequencies in Hz (array in, array out) with
        ``warp(0) == 0``; output above ``sr / 2`` is dropped.

    Returns
    -------
    np.ndarray
        Shape ``(samples,)``, float32.
    """
    from scipy.signal import istft, stft

    if len(wav) < n_fft:
        return np.asarray(wav, dtype=np.float32).copy()
    _, _, spectrum = stft(wav.astype(np.float64), fs=sr, nperseg=n_fft, noverlap=n_fft - hop)
    n_bins = spectrum.shape[0]
    bin_hz = sr / n_fft
    centre = 2 * np.pi * np.arange(n_bins)[:, None] / n_fft          # rad / sample
    # phases as if the window were centred on its frame (a partial's main lobe then has
    # one phase in all its bins, so an output bin may take any of them); undone below
    alternate = (-1.0) ** np.arange(n_bins)[:, None]
    phase = np.angle(spectrum * alternate)
    advance = np.diff(phase, axis=1, prepend=phase[:, :1] - centre * hop)
    deviation = np.angle(np.exp(1j * (advance - centre * hop)))       # wrapped to (-pi, pi]
    instantaneous_hz = (centre + deviation / hop) * sr / (2 * np.pi)  # (bins, frames)

    grid_hz = np.arange(n_bins) * bin_hz
    warped_grid = warp(grid_hz)
    source = np.interp(grid_hz, warped_grid, grid_hz, right=np.inf) / bin_hz
    inside = source <= n_bins - 1
    low = np.clip(np.floor(source), 0, n_bins - 2).astype(int)
    frac = np.where(inside, source - low, 0.0)[:, None]
    magnitude = np.abs(spectrum)
    out_magnitude = ((1 - frac) * magnitude[low] + frac * magnitude[low + 1]) * inside[:, None]
    nearest = np.clip(np.round(source), 0, n_bins - 1).astype(int)
    out_hz = warp(instantaneous_hz[nearest])
    out_phase = phase[nearest, :1] + np.cumsum(2 * np.pi * out_hz / sr * hop, axis=1)
    out_phase -= 2 * np.pi * out_hz[:, :1] / sr * hop
    _, out = istft(out_magnitude * np.exp(1j * out_phase) * alternate, fs=sr, nperseg=n_fft,
                   noverlap=n_fft - hop)
    return np.pad(out, (0, max(0, len(wav) - len(out))))[: len(wav)].astype(np.float32)


def vtlp_warp(alpha: float, sr: int, boundary_hz: float = 4800.0):
    """Jaitly & Hinton's (2013) piecewise-linear VTLP map of frequencies in Hz.

    ``f -> alpha * f`` up to ``boundary_hz * min(alpha, 1) / alpha``, then a
    straight line to ``sr / 2``, so the band edge stays where it is.
    """
    nyquist = sr / 2
    knee = boundary_hz * min(alpha, 1.0) / alpha

    def warp(freq):
        freq = np.asarray(freq, dtype=np.float64)
        upper = nyquist - (nyquist - alpha * knee) / (nyquist - knee) * (nyquist - freq)
        return np.where(freq <= knee, alpha * freq, upper)

    return warp


class Effect:
    """One augmentation: default options, a parameter draw and the transform.

    Subclasses set ``name`` and ``defaults`` (always with ``p``, the
    probability the effect is applied to an utterance) and implement
    :meth:`draw` (options -> the parameters recorded in ``augment.csv``)
    and :meth:`__call__` (audio and those parameters -> audio).
    """

    name = ""
    defaults: ClassVar[dict] = {}

    def draw(self, rng: np.random.Generator, options: dict) -> dict:
        raise NotImplementedError

    def __call__(self, wav: np.ndarray, sr: int, rng: np.random.Generator, **params
                 ) -> np.ndarray:
        raise NotImplementedError


class Speed(Effect):
    """Speed perturbation: resampled playback, tempo and pitch scale by ``factor``.

    The output has ``round(samples / factor)`` samples (the manifest's
    duration is the final one).
    """

    name = "speed"
    defaults: ClassVar[dict] = {"p": 0.5, "range": (0.85, 1.15)}

    def draw(self, rng, options):
        return {"factor": _uniform(rng, options["range"], 3)}

    def __call__(self, wav, sr, rng, factor):
        from speechkd.resampling import resample

        return resample(np.asarray(wav, dtype=np.float32), round(sr * factor), sr)


class Pitch(Effect):
    """Pitch shift by ``semitones`` without tempo change (all frequencies times 2**(k/12))."""

    name = "pitch"
    defaults: ClassVar[dict] = {"p": 0.3, "range": (-2.0, 2.0)}

    def draw(self, rng, options):
        return {"semitones": _uniform(rng, options["range"], 2)}

    def __call__(self, wav, sr, rng, semitones):
        ratio = 2.0 ** (semitones / 12.0)
        return warp_frequencies(wav, sr, lambda freq: ratio * np.asarray(freq))


class VocalTractLength(Effect):
    """Vocal-tract-length perturbation: :func:`vtlp_warp` by ``alpha``, same length."""

    name = "vtlp"
    defaults: ClassVar[dict] = {"p": 0.3, "range": (0.9, 1.1), "boundary_hz": 4800.0}

    def draw(self, rng, options):
        return {"alpha": _uniform(rng, options["range"], 3),
                "boundary_hz": float(options["boundary_hz"])}

    def __call__(self, wav, sr, rng, alpha, boundary_hz):
        return warp_frequencies(wav, sr, vtlp_warp(alpha, sr, boundary_hz))


class Reverb(Effect):
    """Synthetic room (:func:`speechkd.data.domains.reverberate`) with drawn RT60 and DRR."""

    name = "reverb"
    defaults: ClassVar[dict] = {"p": 0.2, "rt60_s": (0.2, 0.8), "drr_db": (0.0, 10.0)}

    def draw(self, rng, options):
        return {"rt60_s": _uniform(rng, options["rt60_s"], 3),
                "drr_db": _uniform(rng, options["drr_db"], 2)}

    def __call__(self, wav, sr, rng, rt60_s, drr_db):
        return domains.reverberate(wav, sr, rng, rt60_s=rt60_s, drr_db=drr_db)


class Noise(Effect):
    """Additive noise (:func:`speechkd.data.domains.add_noise`) of a drawn type and SNR."""

    name = "noise"
    defaults: ClassVar[dict] = {"p": 0.3, "snr_db": (5.0, 30.0), "noise_types": domains.NOISE_TYPES}

    def draw(self, rng, options):
        types = list(options["noise_types"])
        unknown = sorted(set(types) - set(domains.NOISE_TYPES))
        if unknown or not types:
            raise ValueError(f"augment noise: unknown noise types {unknown}; "
                             f"choose from {domains.NOISE_TYPES}")
        return {"type": types[int(rng.integers(len(types)))],
                "snr_db": _uniform(rng, options["snr_db"], 2)}

    def __call__(self, wav, sr, rng, type, snr_db):
        return domains.add_noise(wav, sr, rng, snr_db=snr_db, noise_types=(type,))


class Telephone(Effect):
    """8 kHz telephone channel with a drawn codec, upsampled back to ``sr``.

    :func:`speechkd.data.domains.telephone` (band-pass, 8 kHz, codec gain)
    with the codec drawn from ``codecs``: G.711 ``ulaw``/``alaw``, ``gsm``
    6.10, or a lossy ``opus``/``vorbis``/``mp3`` at a drawn compression.
    """

    name = "telephone"
    defaults: ClassVar[dict] = {"p": 0.4, "codecs": ("ulaw", "alaw", "gsm", "opus", "vorbis", "mp3"),
                "low_hz": (250.0, 350.0), "high_hz": (3100.0, 3400.0),
                "codec_gain_db": (-12.0, 0.0), "compression": (0.6, 0.99)}

    def draw(self, rng, options):
        codec = _choose_codec(rng, options["codecs"], CODECS, self.name)
        return {"codec": codec, "low_hz": _uniform(rng, options["low_hz"], 1),
                "high_hz": _uniform(rng, options["high_hz"], 1),
                "codec_gain_db": _uniform(rng, options["codec_gain_db"], 2),
                **_compression(rng, options, codec)}

    def __call__(self, wav, sr, rng, codec, low_hz, high_hz, codec_gain_db, compression=0.0):
        def round_trip(narrow):
            return codec_round_trip(narrow, domains.TELEPHONE_RATE, codec, compression)

        return domains.telephone(wav, sr, rng, low_hz=low_hz, high_hz=high_hz,
                                 codec_gain_db=codec_gain_db, codec=round_trip)


class Codec(Effect):
    """Wideband lossy codec round trip at ``sr`` (Opus, Vorbis or MP3 at a drawn compression)."""

    name = "codec"
    defaults: ClassVar[dict] = {"p": 0.1, "codecs": LOSSY_CODECS, "compression": (0.6, 0.99)}

    def draw(self, rng, options):
        codec = _choose_codec(rng, options["codecs"], LOSSY_CODECS, self.name)
        return {"codec": codec, **_compression(rng, options, codec)}

    def __call__(self, wav, sr, rng, codec, compression):
        return codec_round_trip(wav, sr, codec, compression)


class Gain(Effect):
    """Loudness: scale by ``gain_db``; with ``clip`` (drawn with ``clip_p``) hard-clip at full scale.

    Without clipping, a peak above full scale is later scaled down by the
    corpus writer (:func:`speechkd.data.corpus.to_pcm16`), as any utterance.
    """

    name = "gain"
    defaults: ClassVar[dict] = {"p": 0.5, "range": (-25.0, 10.0), "clip_p": 0.1}

    def draw(self, rng, options):
        return {"gain_db": _uniform(rng, options["range"], 2),
                "clip": bool(rng.uniform() < options["clip_p"])}

    def __call__(self, wav, sr, rng, gain_db, clip):
        out = np.asarray(wav, dtype=np.float32) * np.float32(10 ** (gain_db / 20))
        full_scale = 32767 / 32768
        return np.clip(out, -full_scale, full_scale) if clip else out


class DCOffset(Effect):
    """Add a constant ``offset`` (a cheap microphone or ADC bias)."""

    name = "dc"
    defaults: ClassVar[dict] = {"p": 0.1, "range": (-0.05, 0.05)}

    def draw(self, rng, options):
        return {"offset": _uniform(rng, options["range"], 4)}

    def __call__(self, wav, sr, rng, offset):
        return (np.asarray(wav, dtype=np.float32) + np.float32(offset)).astype(np.float32)


def _choose_codec(rng, codecs, allowed, effect: str) -> str:
    codecs = list(codecs)
    unknown = [codec for codec in codecs if codec not in allowed]
    if unknown or not codecs:
        raise ValueError(f"augment {effect}: unknown codecs {unknown}; choose from "
                         f"{', '.join(allowed)}")
    return codecs[int(rng.integers(len(codecs)))]


def _compression(rng, options, codec: str) -> dict:
    return {"compression": _uniform(rng, options["compression"], 2)} if codec in LOSSY_CODECS \
        else {}


EFFECTS = {effect.name: effect for effect in (
    Speed(), Pitch(), VocalTractLength(), Reverb(), Noise(), Telephone(), Codec(), Gain(),
    DCOffset())}
"""All effects by name, in the order a chain applies them."""

PRESETS = {
    "none": {},
    "light": {"speed": {"p": 0.5, "range": (0.9, 1.1)}, "gain": {"p": 0.5, "clip_p": 0.0},
              "noise": {"p": 0.2, "snr_db": (10.0, 30.0)}},
    "telephone": {"telephone": {"p": 0.5}, "gain": {"p": 0.5}},
    "full": {"speed": {"p": 0.5}, "pitch": {"p": 0.3}, "vtlp": {"p": 0.3},
             "reverb": {"p": 0.2}, "noise": {"p": 0.3}, "telephone": {"p": 0.4},
             "codec": {"p": 0.1}, "gain": {"p": 0.5}, "dc": {"p": 0.1}},
}
"""Named chains; a dict config may start from one with ``preset: NAME`` and override effects."""

DEFAULT_SPLITS = ("train", "unlabelled")


@dataclass(frozen=True)
class Augmentation:
    """A chain of effects with their options, and the corpus splits it applies to.

    Build it with :meth:`from_config`. ``effects`` maps effect name -> full
    options (defaults filled in); effects not named are never applied.
    """

    effects: dict = field(default_factory=dict)
    splits: tuple = DEFAULT_SPLITS

    @classmethod
    def from_config(cls, config) -> Augmentation | None:
        """Parse ``None``, a preset name or a dict (see the module docstring).

        A dict may hold ``preset`` (the chain to start from), ``splits``
        (default ``[train, unlabelled]``) and effects; an effect is a dict
        of options overriding its defaults, or a number, its ``p``.

        Returns
        -------
        Augmentation or None
            None when no effect can apply (``None``, ``"none"``, ``{}``, all ``p`` 0).
        """
        if config is None or isinstance(config, Augmentation):
            return config
        if isinstance(config, str):
            config = {"preset": config}
        if not isinstance(config, dict):
            raise TypeError(f"augment must be null, a preset ({', '.join(PRESETS)}) or a "
                             f"dict of effects, got {config!r}")
        config = dict(config)
        preset = config.pop("preset", "none")
        if preset not in PRESETS:
            raise ValueError(f"unknown augment preset {preset!r}; presets are "
                             f"{', '.join(PRESETS)}")
        splits = tuple(config.pop("splits", DEFAULT_SPLITS))
        unknown_splits = sorted(set(splits) - {"train", "unlabelled", "dev", "test"})
        if unknown_splits:
            raise ValueError(f"unknown augment splits {unknown_splits}; the corpus splits are "
                             "train, unlabelled, dev, test")
        requested = {**copy.deepcopy(PRESETS[preset]), **config}
        effects = {}
        for name in EFFECTS:
            if name in requested:
                effects[name] = _effect_options(name, requested.pop(name))
        if requested:
            raise ValueError(f"unknown augment effects {sorted(requested)}; effects are "
                             f"{', '.join(EFFECTS)} (plus preset, splits)")
        effects = {name: options for name, options in effects.items() if options["p"] > 0}
        return cls(effects, splits) if effects and splits else None

    def describe(self) -> dict:
        """JSON-ready settings (lists, not tuples): the corpus fingerprint's part."""
        return json.loads(json.dumps({"effects": self.effects, "splits": list(self.splits)}))

    @property
    def tag(self) -> str:
        """Short hash of the settings: augmented audio lives in its own folder per setting."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def _draws(self, seed: int, utt_id: str):
        for name, options in self.effects.items():
            rng = domains.domain_rng(seed, utt_id, f"augment:{name}")
            if rng.uniform() < options["p"]:
                yield name, EFFECTS[name].draw(rng, options), rng

    def plan(self, seed: int, utt_id: str) -> dict:
        """``{effect: parameters}`` applied to ``utt_id``, in order, without any audio work."""
        return {name: params for name, params, _ in self._draws(seed, utt_id)}

    def apply(self, wav: np.ndarray, sr: int, seed: int, utt_id: str) -> np.ndarray:
        """Run the chain drawn for ``(seed, utt_id)``.

        Parameters
        ----------
        wav : np.ndarray
            Shape ``(samples,)``, float in ``[-1, 1]``.
        sr : int
            Sample rate (16000 in the corpus); the output has the same.

        Returns
        -------
        np.ndarray
            Shape ``(samples',)``, float32; ``samples'`` differs only under ``speed``.
        """
        out = np.asarray(wav, dtype=np.float32)
        if out.size == 0:  # nothing to perturb (and the FFT-based effects refuse it)
            return out
        for name, params, rng in self._draws(seed, utt_id):
            out = np.asarray(EFFECTS[name](out, sr, rng, **params), dtype=np.float32)
        return out


def _effect_options(name: str, given) -> dict:
    """An effect's options: its defaults overridden by ``given`` (a dict, or a number = p)."""
    defaults = EFFECTS[name].defaults
    if given is None:
        given = {}
    elif not isinstance(given, dict):
        given = {"p": given}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"augment {name}: unknown options {unknown}; options are "
                         f"{', '.join(defaults)}")
    options = {**defaults, **given}
    if not 0.0 <= float(options["p"]) <= 1.0:
        raise ValueError(f"augment {name}: p must be in [0, 1], got {options['p']!r}")
    for key, value in options.items():
        is_range = key.endswith(("range", "_db", "_s", "_hz")) or key == "compression"
        if is_range and np.ndim(value) == 1 and (len(value) != 2 or value[0] > value[1]):
            raise ValueError(f"augment {name}: {key} must be [low, high] with low <= high, "
                                 f"got {value!r}")
    return options


def write_augment_manifest(path, rows) -> None:
    """Write ``augment.csv``: ``ID,split,effects,params``.

    ``effects`` is the applied effects joined by ``+`` (``none`` if none),
    ``params`` their parameters as JSON, e.g. ``{"speed": {"factor": 1.07}}``.

    Parameters
    ----------
    rows : iterable of (str, str, dict)
        ``(utt_id, split, plan)`` with ``plan`` from :meth:`Augmentation.plan`.
    """
    import csv
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "split", "effects", "params"])
        for utt_id, split, plan in rows:
            writer.writerow([utt_id, split, "+".join(plan) or "none",
                             json.dumps(plan, sort_keys=True)])
    os.replace(tmp, path)
