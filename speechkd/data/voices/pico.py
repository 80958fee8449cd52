"""SVOX Pico's voices (PyPI ``ttspico``, Apache-2.0) as a synthesiser.

Pico is the HMM-based text-to-speech engine of Android's open-source
releases: one recorded woman per language (en-US, en-GB, de-DE, es-ES,
fr-FR, it-IT), smoother and closer to a human voice than espeak-ng's formant
synthesis, and the only voice of a recorded person the corpus has for
German, Spanish and French. ``ttspico`` builds the engine from source and
ships its language files.

A Pico engine carries state from one utterance to the next (the same text
spoken twice gives different samples), so every utterance gets a fresh
engine (about 35 ms); a fresh engine's output depends only on text, voice,
rate and pitch, in any process.
"""

from __future__ import annotations

import numpy as np

from speechkd.data.voices.base import (
    SPEEDS,
    EngineSynthesizer,
    EngineVoice,
    Voice,
    find_engine_voice,
    importable,
)

PICO_RATE = 16000
"""Sample rate of Pico's output (Hz)."""

PICO_PITCHES = tuple(range(60, 125, 5))
"""Pitches drawn for Pico's voices, in percent of the voice's own (all are women's voices
near 180 Hz; 60 % puts one near 110 Hz, a man's range)."""

PICO_VOICES = (
    EngineVoice("pico", "en-US", "en", "pico-lh", SPEEDS, PICO_PITCHES),
    EngineVoice("pico", "en-GB", "en", "pico-kh", SPEEDS, PICO_PITCHES),
    EngineVoice("pico", "de-DE", "de", "pico-gl", SPEEDS, PICO_PITCHES),
    EngineVoice("pico", "es-ES", "es", "pico-zl", SPEEDS, PICO_PITCHES),
    EngineVoice("pico", "fr-FR", "fr", "pico-nk", SPEEDS, PICO_PITCHES),
    EngineVoice("pico", "it-IT", "it", "pico-cm", SPEEDS, PICO_PITCHES),
)
"""Pico's voices, named by Pico's language code; each is another person (the speaker
names are those of Pico's language files: ``en-US_lh0_sg.bin`` ...)."""


class PicoSynthesizer(EngineSynthesizer):
    """SVOX Pico through ``ttspico``, returning 16 kHz float32 audio.

    ``Voice.rate`` is the speed and ``Voice.pitch`` the pitch, both in percent
    of the voice's own (Pico's ``rate`` and ``pitch`` properties).

    Parameters
    ----------
    trim_keep_s, peak : float
        As :func:`speechkd.data.voices.base.finish_waveform`.
    """

    engine = "pico"

    @staticmethod
    def available() -> bool:
        """Whether ``ttspico`` imports (``pip install 'speechkd[voices]'``)."""
        return importable("ttspico")

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; 16 kHz, silence-trimmed, peak-normalised float32.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype float32.
        """
        import ttspico

        find_engine_voice(PICO_VOICES, voice, lang)
        # the language files ttspico ships, before any system-wide /usr/share/pico/lang
        engine = ttspico.TtsEngine(voice.variant, lang_dir=ttspico._LANG_DIR)
        engine.rate = voice.rate
        engine.pitch = voice.pitch or 100
        pcm = engine.speak(text)
        if not pcm:
            raise RuntimeError(f"pico spoke nothing for {text!r} ({voice.name})")
        raw = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return self.finish(raw, PICO_RATE)
