"""Offline speech synthesis with espeak-ng, driven through ctypes.

The espeak-ng shared library and its voice data come from the PyPI package
``espeakng-loader``. The library keeps global state and is not thread-safe:
use it from one thread per process (the corpus builder parallelises with
worker processes, each loading its own copy).

Example
-------
>>> synth = EspeakSynthesizer()                                  # doctest: +SKIP
>>> wav = synth.synthesize("twenty three", "en", Voice("m3", 160, 45))  # doctest: +SKIP
>>> wav.dtype, wav.ndim                                    # doctest: +SKIP
(dtype('float32'), 1)
"""

from __future__ import annotations

import ctypes

import numpy as np

from speechkd.data.voices.base import EngineSynthesizer, Voice

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
ESPEAK_POS_CHARACTER = 1
ESPEAK_RATE = 1
ESPEAK_VOLUME = 2
ESPEAK_PITCH = 3
ESPEAK_RANGE = 4
EE_OK = 0
PHONEMES_IPA_SEPARATED = 0x02 | (ord("_") << 8)
"""``espeak_TextToPhonemes`` mode: IPA, phonemes separated by ``_``."""

ESPEAK_VOICES = {
    "en": "en-us",
    "de": "de",
    "es": "es",
    "it": "it",
    "fr": "fr",
    "ru": "ru",
    "uk": "uk",
    "cs": "cs",
    "pl": "pl",
    "eo": "eo",
    "bg": "bg",
}
"""espeak-ng voice name for each language code the corpus uses."""

SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakSynthesizer(EngineSynthesizer):
    """espeak-ng in synchronous mode, returning 16 kHz float32 audio.

    espeak-ng keeps static state between utterances (pitch flutter phase,
    wave phase) and draws breath noise from libc's ``rand()``, so the same
    text would come out different depending on what was spoken before. To
    make every utterance depend only on its own text and voice, the shared
    library is loaded, initialised, used for one utterance and unloaded
    again (under 1 ms), and ``srand`` is reset before each utterance.

    Parameters
    ----------
    trim_keep_s, peak : float
        As :class:`~speechkd.data.voices.base.EngineSynthesizer`.
    """

    engine = "espeak"

    @staticmethod
    def available() -> bool:
        """Whether the PyPI package espeakng-loader (a dependency of speechkd) is installed."""
        import importlib.util
        return importlib.util.find_spec("espeakng_loader") is not None

    def __init__(self, trim_keep_s: float = 0.1, peak: float = 0.5):
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - dependency of the package
            raise ImportError(
                "speech synthesis needs the PyPI package espeakng-loader: "
                "pip install espeakng-loader"
            ) from error
        super().__init__(trim_keep_s, peak)
        self._library_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._chunks: list[np.ndarray] = []
        self._callback = SYNTH_CALLBACK(self._collect)
        self._libc = ctypes.CDLL(None)
        self.espeak_rate = self._with_fresh_library(lambda lib, rate: rate)

    def _collect(self, samples, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n_samples,)).copy())
        return 0

    def _with_fresh_library(self, work):
        """Load and initialise espeak-ng, run ``work(lib, sample_rate)``, unload it."""
        import _ctypes

        lib = ctypes.CDLL(self._library_path)
        _declare_signatures(lib)
        try:
            rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
            if rate <= 0:
                raise RuntimeError(
                    f"espeak_Initialize failed (data path {self._data_path.decode()})")
            lib.espeak_SetSynthCallback(self._callback)
            return work(lib, int(rate))
        finally:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)

    def synthesize_raw(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Synthesize ``text`` and return espeak's int16 samples at ``self.espeak_rate``.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype int16.
        """
        if lang not in ESPEAK_VOICES:
            raise ValueError(f"no espeak-ng voice configured for language {lang!r}")

        def speak(lib, rate):
            name = f"{ESPEAK_VOICES[lang]}+{voice.variant}".encode()
            if lib.espeak_SetVoiceByName(name) != EE_OK:
                raise RuntimeError(f"espeak-ng has no voice {name.decode()!r}")
            for parameter, value in ((ESPEAK_RATE, voice.rate), (ESPEAK_PITCH, voice.pitch),
                                     (ESPEAK_VOLUME, 100), (ESPEAK_RANGE, 50)):
                lib.espeak_SetParameter(parameter, int(value), 0)
            self._chunks = []
            self._libc.srand(1)
            encoded = text.encode("utf-8") + b"\0"
            buffer = ctypes.create_string_buffer(encoded, len(encoded))
            status = lib.espeak_Synth(buffer, len(encoded), 0, ESPEAK_POS_CHARACTER, 0,
                                      ESPEAK_CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if status != EE_OK:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
            return self._chunks

        chunks = self._with_fresh_library(speak)
        if not chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r} ({lang}, {voice.name})")
        return np.concatenate(chunks)

    def phonemes(self, words: list[str], espeak_voice: str) -> list[list[str]]:
        """espeak-ng's IPA transcription of each of ``words`` (one library load for all).

        Parameters
        ----------
        words : list of str
            Words, each transcribed on its own (word boundaries survive).
        espeak_voice : str
            espeak-ng voice name, e.g. ``"es-419"``.

        Returns
        -------
        list of list of str
            Per word, one entry per phoneme (``["t", "ɾ", "ˈe", "s"]`` for
            Spanish ``tres``), stress marks before the phoneme they fall on.
        """
        def transcribe(lib, rate):
            if lib.espeak_SetVoiceByName(espeak_voice.encode()) != EE_OK:
                raise RuntimeError(f"espeak-ng has no voice {espeak_voice!r}")
            return [_word_phonemes(lib, word) for word in words]

        return self._with_fresh_library(transcribe)

    def synthesize(self, text: str, lang: str, voice: Voice) -> np.ndarray:
        """Synthesize ``text``; 16 kHz, silence-trimmed, peak-normalised float32.

        Returns
        -------
        np.ndarray
            Shape ``(samples,)``, dtype float32, values within ``[-peak, peak]``.
        """
        raw = self.synthesize_raw(text, lang, voice).astype(np.float32) / 32768.0
        return self.finish(raw, self.espeak_rate)


def _word_phonemes(lib, word: str) -> list[str]:
    buffer = ctypes.create_string_buffer(word.encode("utf-8") + b"\0")
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    clauses = []
    while pointer.value:  # espeak-ng moves the pointer past each clause it transcribes
        clauses.append(lib.espeak_TextToPhonemes(ctypes.byref(pointer), ESPEAK_CHARS_UTF8,
                                                 PHONEMES_IPA_SEPARATED))
    return [phoneme for clause in clauses
            for phoneme in clause.decode("utf-8").replace(" ", "_").split("_") if phoneme]


def _declare_signatures(lib) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int

