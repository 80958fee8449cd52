"""Moved to :mod:`speechkd.data.voices.espeak`; kept so existing imports work."""

from speechkd.data.voices.base import SAMPLE_RATE, Voice, trim_silence
from speechkd.data.voices.espeak import ESPEAK_VOICES, EspeakSynthesizer

Synthesizer = EspeakSynthesizer

__all__ = ["ESPEAK_VOICES", "SAMPLE_RATE", "Synthesizer", "Voice", "trim_silence"]
