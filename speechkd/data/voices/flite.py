"""flite's built-in English voices (Debian package ``flite``) as a synthesiser.

flite starts in about 20 ms, so each utterance is one ``flite`` process;
its output depends only on text, voice and the two features set here.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from speechkd.data.voices.base import (
    HIGH_F0,
    LOW_F0,
    SPEEDS,
    EngineSynthesizer,
    EngineVoice,
    Voice,
    find_engine_voice,
    read_wave_pcm,
    scratch_wave,
)

FLITE_VOICES = (
    EngineVoice("flite", "kal16", "en", "kal", SPEEDS, LOW_F0),
    EngineVoice("flite", "awb", "en", "awb", SPEEDS, LOW_F0),
    EngineVoice("flite", "rms", "en", "rms", SPEEDS, LOW_F0),
    EngineVoice("flite", "slt", "en", "slt", SPEEDS, HIGH_F0),
)
"""flite voices the corpus uses (all English; ``kal16`` and ``slt`` are the people
behind festival's ``kal`` and ``slt``)."""


class FliteSynthesizer(EngineSynthesizer):
    """flite, one process per utterance, returning 16 kHz float32 audio.

    Parameters
    ----------
    trim_keep_s, peak : float
        As :func:`speechkd.data.voices.base.finish_waveform`.
    """

    engine = "flite"

    @staticmethod
    def available() -> bool:
        """Whether the ``flite`` binary is on ``PATH``."""
        return shutil.which("flite") is not None

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; 16 kHz, silence-trimmed, peak-normalised float32.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype float32.
        """
        find_engine_voice(FLITE_VOICES, voice, lang)
        with scratch_wave(self.engine) as path:
            command = ["flite", "-voice", voice.variant,
                       "--setf", f"duration_stretch={100.0 / voice.rate:.4f}"]
            if voice.pitch:
                command += ["--setf", f"int_f0_target_mean={voice.pitch}"]
            done = subprocess.run([*command, "-t", text, "-o", str(path)], check=False,
                                  capture_output=True, text=True, errors="replace")
            if done.returncode != 0 or not path.exists():
                raise RuntimeError(f"flite failed for {text!r} ({voice.name}, exit "
                                   f"{done.returncode}): {done.stderr.strip()[-300:]}")
            raw, rate = read_wave_pcm(path)
        return self.finish(raw, rate)
