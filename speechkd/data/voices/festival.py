"""Festival voices (Debian packages ``festival`` and ``festvox-*``) as a synthesiser.

One ``festival --pipe`` process per voice and synthesiser (per corpus
worker) reads Scheme commands from a pipe: loading a voice costs 0.2-1.5 s,
speaking a number 5-20 ms (HTS ``slt``: 0.1 s), so a process per utterance
would spend most of its time starting. A process speaks one voice only:
festival's voices set global Scheme state (lexicon, token rules, hooks) that
another voice may not reset, and a Russian voice loaded after the others
was seen to fail. Every utterance sets its duration stretch and f0 target
again, so its audio depends only on its text and voice, not on what was
spoken before (checked by the tests: byte-identical in any order).

A festival voice speaks one language: :data:`FESTIVAL_VOICES` and :data:`CROSS_LINGUAL_VOICES` say which.
The Italian voices read ISO-8859-1 text, the others UTF-8. A voice whose
``recorded_lang`` differs from its language (``kal-es``) speaks by phone mapping:
each word becomes a lexicon entry of English phones
(:func:`speechkd.data.voices.phones.lexicon_entries`) under an ASCII key, added
before the utterance (so the lexicon state never depends on what was spoken
before), and festival speaks the keys with the voice's own prosody models.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from speechkd.data.voices.base import (
    LOW_F0,
    SPEEDS,
    EngineSynthesizer,
    EngineVoice,
    Voice,
    find_engine_voice,
    read_wave_pcm,
    scratch_wave,
)
from speechkd.data.voices.espeak import EspeakSynthesizer
from speechkd.data.voices.phones import lexicon_entries

FESTIVAL_VOICES = (
    EngineVoice("festival", "kal", "en", "kal", SPEEDS, LOW_F0),
    EngineVoice("festival", "ked", "en", "ked", SPEEDS, LOW_F0),
    EngineVoice("festival", "slt", "en", "slt", SPEEDS, (0,)),
    EngineVoice("festival", "pc", "it", "pc", SPEEDS, (0,)),
    EngineVoice("festival", "lp", "it", "lp", SPEEDS, (0,)),
    EngineVoice("festival", "nsh", "ru", "nsh", SPEEDS, (0,)),
)
"""Festival voices the corpus uses, each speaking the language it was recorded in. Pitch
``0``: the voice keeps its own f0; only the English diphone voices take an f0 target
(``int_lr_params``); the Italian ones compute f0 in their own Scheme function, the HTS and
cluster-unit voices from their models."""

CROSS_LINGUAL_VOICES = (
    EngineVoice("festival", "kal-es", "es", "kal", SPEEDS, LOW_F0, recorded_lang="en"),
    EngineVoice("festival", "ked-es", "es", "ked", SPEEDS, LOW_F0, recorded_lang="en"),
    EngineVoice("festival", "kal-de", "de", "kal", SPEEDS, LOW_F0, recorded_lang="en"),
    EngineVoice("festival", "ked-de", "de", "ked", SPEEDS, LOW_F0, recorded_lang="en"),
    EngineVoice("festival", "kal-fr", "fr", "kal", SPEEDS, LOW_F0, recorded_lang="en"),
    EngineVoice("festival", "ked-fr", "fr", "ked", SPEEDS, LOW_F0, recorded_lang="en"),
)
"""``kal-es``, ``ked-es`` (and ``-de``, ``-fr``) are the English diphone voices speaking
Spanish (German, French) by phone mapping (:mod:`speechkd.data.voices.phones`): the same
people as ``kal`` and ``ked``. Opt-in (engine ``festival-xling``): on the quickstart
budget they made a model worse on real and synthetic speech (RESULTS.md, "Real speech")."""

SCHEME_VOICES = {
    "kal": ("kal_diphone", "utf-8", "festvox-kallpc16k"),
    "ked": ("ked_diphone", "utf-8", "festvox-kdlpc16k"),
    "slt": ("cmu_us_slt_arctic_hts", "utf-8", "festvox-us-slt-hts"),
    "pc": ("pc_diphone", "iso-8859-1", "festvox-itapc16k"),
    "lp": ("lp_diphone", "iso-8859-1", "festvox-italp16k"),
    "nsh": ("msu_ru_nsh_clunits", "utf-8", "festvox-ru"),
    **{f"{variant}-{lang}": (name, "utf-8", package) for lang in ("es", "de", "fr")
       for variant, name, package in (("kal", "kal_diphone", "festvox-kallpc16k"),
                                      ("ked", "ked_diphone", "festvox-kdlpc16k"))},
}
"""Festival's name (``voice_<name>``), text encoding and Debian package of each variant."""

VOICE_FOLDERS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")
"""Where festival looks for voices (``<folder>/<language>/<name>/``) on Debian."""

DONE = "SPEECHKD-UTTERANCE-DONE"


class FestivalSynthesizer(EngineSynthesizer):
    """Festival in one long-lived process per voice, returning 16 kHz float32 audio.

    Parameters
    ----------
    trim_keep_s, peak : float
        As :func:`speechkd.data.voices.base.finish_waveform`.
    """

    engine = "festival"

    @staticmethod
    def available() -> bool:
        """Whether the ``festival`` binary is on ``PATH``."""
        return shutil.which("festival") is not None

    @staticmethod
    def missing_voices(voices) -> dict:
        """``{variant: Debian package}`` of the voices among ``voices`` not installed."""
        return {variant: SCHEME_VOICES[variant][2] for variant in voices
                if not any(any(Path(folder).glob(f"*/{SCHEME_VOICES[variant][0]}"))
                           for folder in VOICE_FOLDERS)}

    def __init__(self, trim_keep_s: float = 0.1, peak: float = 0.5):
        super().__init__(trim_keep_s, peak)
        self._processes: dict = {}
        self._count = 0
        self._transcriber = None

    def _espeak(self):
        """The espeak-ng instance that transcribes words for phone-mapped voices."""
        if self._transcriber is None:
            self._transcriber = EspeakSynthesizer()
        return self._transcriber

    def _process(self, variant: str):
        """The festival process of ``variant``, started (with its voice loaded) if needed."""
        if variant not in self._processes:
            # stdbuf: festival's stdout is block-buffered on a pipe; the end-of-utterance
            # marker must arrive as soon as it is printed.
            process = subprocess.Popen(
                ["stdbuf", "-oL", "festival", "--pipe"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            process.stdin.write(f"(voice_{SCHEME_VOICES[variant][0]})\n".encode())
            self._processes[variant] = process
        return self._processes[variant]

    def close(self, variant: str | None = None) -> None:
        """End the festival process of ``variant``, or all (each exits at the end of its input)."""
        for name in [variant] if variant else list(self._processes):
            process = self._processes.pop(name, None)
            if process is not None:
                process.stdin.close()
                process.wait(timeout=10)
                process.stdout.close()

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown: festival exits on EOF anyway
            self.close()

    def _speak(self, text: str, voice: Voice, path: Path, encoding: str,
               lexicon: list = ()) -> list[str]:
        """Send one utterance's commands; festival's output lines until its own marker.

        Each utterance ends with a numbered marker, so output left over from an
        earlier utterance can never be taken for this one's.
        """
        process = self._process(voice.variant)
        self._count += 1
        marker = f"{DONE}-{self._count}".encode()
        log = []
        try:
            process.stdin.write(self.commands(text, voice, path, self._count, lexicon)
                                .encode(encoding))
            process.stdin.flush()
            for line in iter(process.stdout.readline, b""):
                if line.strip() == marker:
                    return log
                log.append(line.decode("utf-8", errors="replace").rstrip())
            raise BrokenPipeError("festival exited")
        except (BrokenPipeError, OSError) as error:
            self.close(voice.variant)
            raise RuntimeError(f"festival stopped while speaking {text!r} ({voice.name}): "
                               + " | ".join(log[-5:])) from error

    def commands(self, text: str, voice: Voice, path: Path, number: int = 0,
                 lexicon: list = ()) -> str:
        """The Scheme that speaks ``text`` with ``voice`` into the wave file ``path``,
        after adding ``lexicon``'s ``(word, syllables)`` entries to the voice's lexicon."""
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        lines = [f"(lex.add.entry '(\"{word}\" nil ("
                 + " ".join(f"(({' '.join(phones)}) {stress})" for phones, stress in syllables)
                 + ")))" for word, syllables in lexicon]
        lines.append(f"(Parameter.set 'Duration_Stretch {100.0 / voice.rate:.4f})")
        if voice.pitch:
            # target_f0_mean heads the diphone voices' int_lr_params; keep their std and model
            lines.append(f"(set! int_lr_params (cons (list 'target_f0_mean {voice.pitch}) "
                         "(cdr int_lr_params)))")
        lines += [f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{path}" \'riff)',
                  f'(format t "{DONE}-{number}\\n")']
        return "\n".join(lines) + "\n"

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; 16 kHz, silence-trimmed, peak-normalised float32.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype float32.
        """
        entry = find_engine_voice(FESTIVAL_VOICES + CROSS_LINGUAL_VOICES, voice, lang)
        encoding = SCHEME_VOICES[voice.variant][1]
        lexicon: list = []
        if entry.recorded_lang and entry.recorded_lang != lang:
            text, lexicon = lexicon_entries(text, lang, self._espeak())
        try:
            text.encode(encoding)
        except UnicodeEncodeError as error:
            raise ValueError(f"festival voice {voice.variant!r} reads {encoding} text; "
                             f"{text!r} has {error.object[error.start:error.end]!r}") from None
        with scratch_wave(self.engine) as path:
            log = self._speak(text, voice, path, encoding, lexicon)
            if not path.exists():  # once more in a fresh process: its output is the same
                self.close(voice.variant)
                log = self._speak(text, voice, path, encoding, lexicon)
            if not path.exists():
                errors = [line for line in log if "error" in line.lower()]
                raise RuntimeError(f"festival wrote no audio for {text!r} ({lang}, {voice.name}): "
                                   + " | ".join(errors[-3:] + log[-3:]))
            raw, rate = read_wave_pcm(path)
        return self.finish(raw, rate)
