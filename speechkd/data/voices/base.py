"""The synthesiser seam: an engine-agnostic :class:`Voice`, the :class:`Synthesizer`
protocol every engine implements, and the post-processing they share.

Every engine returns 16 kHz float32 mono audio, resampled with
:func:`speechkd.resampling.resample`, silence-trimmed and peak-normalised the
same way, so the corpus builder never sees which engine spoke.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from speechkd.resampling import resample

SAMPLE_RATE = 16000
"""Sample rate of every waveform a synthesiser returns (Hz)."""


@dataclass(frozen=True)
class Voice:
    """A pseudo-speaker: an engine's voice with a speaking rate and pitch.

    Parameters
    ----------
    variant : str
        The engine's voice name: an espeak-ng variant (``"m3"``, ``"Annie"``),
        a festival voice (``"kal"``) or a flite voice (``"kal16"``).
    rate : int
        espeak-ng: words per minute (default 175). festival, flite: speed in
        percent of the voice's own (100 = unchanged; 120 = 20 % faster).
    pitch : int
        espeak-ng: base pitch 0..100 (default 50). festival, flite: target
        mean f0 in Hz; 0 where the voice's pitch cannot be set (its own).
    engine : str
        ``"espeak"``, ``"festival"`` or ``"flite"``.
    """

    variant: str
    rate: int
    pitch: int
    engine: str = "espeak"

    @property
    def name(self) -> str:
        """Compact speaker name without dashes: ``"m3r160p45"`` (espeak-ng, as before
        other engines existed), ``"festivalkalr110p95"``, ``"flitekal16r90p120"``,
        ``"festivalkalesr100p95"`` (``kal-es``)."""
        prefix = "" if self.engine == "espeak" else self.engine
        return f"{prefix}{self.variant.lower().replace('-', '')}r{self.rate}p{self.pitch}"


@dataclass(frozen=True)
class EngineVoice:
    """One voice an engine ships, and the rates and pitches the corpus draws for it.

    Parameters
    ----------
    engine, variant : str
        As in :class:`Voice`.
    lang : str
        The only language the voice speaks.
    speaker : str
        The recorded person behind the voice; voices of one person (festival's
        and flite's ``kal``) always land in the same split.
    rates, pitches : tuple of int
        Values drawn per pseudo-speaker (units as in :class:`Voice`).
    recorded_lang : str
        The language the person was recorded speaking, where it is not ``lang``
        (festival's ``kal-es``: ``"en"``, Spanish by phone mapping); ``""`` otherwise.
        The person's split is decided among the voices of that language.
    """

    engine: str
    variant: str
    lang: str
    speaker: str
    rates: tuple
    pitches: tuple
    recorded_lang: str = ""


SPEEDS = tuple(range(80, 130, 5))
"""Speaking rates drawn for pico, festival and flite voices, in percent of the voice's own."""
LOW_F0 = tuple(range(85, 140, 10))
"""Mean f0 targets (Hz) drawn for low-pitched voices (festival's diphone voices default to 105)."""
HIGH_F0 = tuple(range(150, 235, 15))
"""Mean f0 targets (Hz) drawn for high-pitched voices."""


def importable(*modules: str) -> bool:
    """Whether every one of ``modules`` imports (an engine's ``available()`` for PyPI engines)."""
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def find_engine_voice(catalogue, voice: Voice, lang: str) -> EngineVoice:
    """The entry of ``catalogue`` for ``voice``; a clear error if it is unknown or
    does not speak ``lang`` (a festival or flite voice speaks one language only)."""
    entry = next((v for v in catalogue if v.variant == voice.variant), None)
    if entry is None:
        raise ValueError(f"{voice.engine} has no voice {voice.variant!r} in speechkd's list "
                         f"({', '.join(v.variant for v in catalogue)})")
    if entry.lang != lang:
        raise ValueError(f"{voice.engine} voice {voice.variant!r} speaks {entry.lang}, "
                         f"not {lang}")
    return entry


class Synthesizer(Protocol):
    """What an engine implements: deterministic text-to-speech for its voices."""

    engine: str

    @staticmethod
    def available() -> bool:
        """Whether the engine can run on this machine (binary or library installed)."""

    @staticmethod
    def missing_voices(voices) -> dict:
        """``{variant: what to install}`` for those of ``voices`` (engine voice names)
        that are not installed."""

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Speak ``text`` in ``lang`` with ``voice``.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, float32, 16 kHz, trimmed, peak-normalised.
        """


class EngineSynthesizer:
    """What the engines share: the finishing settings, and no voice packages to miss.

    Parameters
    ----------
    trim_keep_s : float
        Silence kept before the first and after the last voiced frame.
    peak : float
        Peak amplitude every utterance is normalised to.
    """

    def __init__(self, trim_keep_s: float = 0.1, peak: float = 0.5):
        self.trim_keep_s, self.peak = trim_keep_s, peak

    @staticmethod
    def missing_voices(voices) -> dict:
        """``{}``: the engine ships its voices (festival's come in packages of their own)."""
        return {}

    def finish(self, raw: np.ndarray, rate: int) -> np.ndarray:
        """:func:`finish_waveform` with this synthesiser's settings: (samples,) at ``rate`` ->
        (samples',) float32 at 16 kHz."""
        return finish_waveform(raw, rate, self.trim_keep_s, self.peak)


def finish_waveform(raw: np.ndarray, rate: int, trim_keep_s: float = 0.1,
                    peak: float = 0.5) -> np.ndarray:
    """An engine's output to the corpus format: 16 kHz, trimmed, peak-normalised float32.

    Parameters
    ----------
    raw : np.ndarray
        Shape ``(samples,)``, float in ``[-1, 1]`` at ``rate`` Hz.
    rate : int
        Sample rate of ``raw``.

    Returns
    -------
    np.ndarray
        Shape ``(samples',)``, float32, values within ``[-peak, peak]``.
    """
    wav = resample(np.asarray(raw, dtype=np.float32), rate, SAMPLE_RATE)
    wav = trim_silence(wav, SAMPLE_RATE, keep_s=trim_keep_s)
    loudest = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if loudest > 0:
        wav = wav * (peak / loudest)
    return wav.astype(np.float32)


@contextmanager
def scratch_wave(engine: str):
    """A path for one wave file an engine writes, removed afterwards (absent at first)."""
    handle, name = tempfile.mkstemp(suffix=".wav", prefix=f"speechkd-{engine}-")
    os.close(handle)
    path = Path(name)
    path.unlink()
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_wave_pcm(path) -> tuple[np.ndarray, int]:
    """Read a RIFF wave file an engine wrote; float32 in ``[-1, 1]`` and its rate."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


def trim_silence(wav: np.ndarray, sr: int, keep_s: float = 0.1, threshold_db: float = -40.0,
                 frame_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing silence, keeping ``keep_s`` seconds around the speech.

    A 10 ms frame counts as speech when its RMS is within ``threshold_db`` of
    the loudest frame.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.

    Returns
    -------
    np.ndarray
        Shape ``(samples',)`` with ``samples' <= samples``.
    """
    frame = max(1, round(frame_s * sr))
    voiced = np.flatnonzero(voiced_frames(wav, sr, threshold_db, frame_s))
    if len(voiced) == 0:
        return wav
    keep = round(keep_s * sr)
    start = max(0, voiced[0] * frame - keep)
    end = min(len(wav), (voiced[-1] + 1) * frame + keep)
    return wav[start:end]


def voiced_frames(wav: np.ndarray, sr: int, threshold_db: float = -40.0,
                  frame_s: float = 0.01) -> np.ndarray:
    """Which frames of ``frame_s`` seconds are speech: RMS within ``threshold_db`` of the
    loudest frame's.

    Parameters
    ----------
    wav : np.ndarray
        Shape ``(samples,)``.

    Returns
    -------
    np.ndarray
        Shape ``(samples // frame,)``, bool; empty when ``wav`` is shorter than a frame.
    """
    frame = max(1, round(frame_s * sr))
    n_frames = len(wav) // frame
    if n_frames == 0:
        return np.zeros(0, dtype=bool)
    frames = wav[: n_frames * frame].reshape(n_frames, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames ** 2, axis=1) + 1e-20)
    return 20 * np.log10(rms / rms.max()) > threshold_db
