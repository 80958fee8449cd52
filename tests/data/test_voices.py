"""Tests of the synthesiser seam (espeak-ng, pico, festival, flite) and of how the corpus draws speakers."""

import json
import shutil
import warnings

import numpy as np
import pytest

from speechkd.data.corpus import BUILDER_VERSION, build_corpus, split_speakers
from speechkd.data.manifest import read_manifest
from speechkd.data.voices import ENGINES, make_synthesizer, recorded_voices, resolve_engines
from speechkd.data.voices.base import Voice

ALL = ("espeak", "pico", "festival", "flite")  # festival-xling is festival speaking es/de/fr: test_phones.py
SAMPLES = {  # engine: (lang, text, voice, the same voice 25 % faster, the same at another pitch)
    "espeak": ("de", "dreiundzwanzig", Voice("m3", 140, 40), Voice("m3", 175, 40),
               Voice("m3", 140, 70)),
    "pico": ("es", "veintitrés", Voice("es-ES", 80, 100, "pico"), Voice("es-ES", 100, 100, "pico"),
             Voice("es-ES", 80, 70, "pico")),
    "festival": ("en", "twenty three", Voice("ked", 80, 95, "festival"),
                 Voice("ked", 100, 95, "festival"), Voice("ked", 80, 125, "festival")),
    "flite": ("en", "twenty three", Voice("awb", 80, 95, "flite"), Voice("awb", 100, 95, "flite"),
              Voice("awb", 80, 125, "flite")),
}


def needs(engine):
    if not ENGINES[engine][0].available():
        pytest.skip(f"{engine} is not installed (make venv debs installs it)")


@pytest.mark.parametrize("engine", ALL)
def test_engine_is_deterministic_and_obeys_rate_and_pitch(engine):
    needs(engine)
    lang, text, voice, faster, higher = SAMPLES[engine]
    first = make_synthesizer(engine)
    reference = first.synthesize(text, lang, voice)
    assert reference.dtype == np.float32 and reference.ndim == 1
    assert np.max(np.abs(reference)) == pytest.approx(0.5, abs=1e-6)
    # what was spoken before, and by which process, does not change the audio
    first.synthesize(text, lang, higher)
    assert np.array_equal(first.synthesize(text, lang, voice), reference)
    assert np.array_equal(make_synthesizer(engine).synthesize(text, lang, voice), reference)
    fast = first.synthesize(text, lang, faster)
    assert 0.6 < len(fast) / len(reference) < 0.92
    pitched = first.synthesize(text, lang, higher)
    assert pitched.shape != reference.shape or not np.array_equal(pitched, reference)


@pytest.mark.parametrize("engine, voice, lang", [("festival", "kal", "de"), ("festival", "nsh", "en"),
                                                 ("flite", "slt", "es"), ("pico", "en-GB", "de")])
def test_a_voice_speaks_only_its_language(engine, voice, lang):
    """And the Italian voices, which read Latin-1, speak accented words."""
    needs(engine)
    with pytest.raises(ValueError, match=f"speaks .*, not {lang}"):
        make_synthesizer(engine).synthesize("hola", lang, Voice(voice, 100, 0, engine))
    with pytest.raises(ValueError, match=f"{engine} has no voice 'xyz'"):
        make_synthesizer(engine).synthesize("hola", lang, Voice("xyz", 100, 0, engine))
    if engine == "festival":
        word = make_synthesizer(engine).synthesize("ventitré", "it", Voice("lp", 100, 0, engine))
        assert 0.5 < len(word) / 16000 < 1.5
        with pytest.raises(ValueError, match="reads iso-8859-1 text; 'ciao ł' has 'ł'"):
            make_synthesizer(engine).synthesize("ciao ł", "it", Voice("lp", 100, 0, engine))


def test_recorded_people_are_disjoint_across_splits_and_test_gets_one():
    engines = tuple(ENGINES)  # festival-xling too
    for lang in ("en", "it", "ru", "de", "es"):
        speakers = split_speakers("full", 0, lang, engines)
        people = {split: {(v.engine, v.variant) for v in voices if v.engine != "espeak"}
                  for split, voices in speakers.items()}
        persons = {split: {next(r.speaker for r in recorded_voices(lang, engines)
                                if (r.engine, r.variant) == key) for key in keys}
                   for split, keys in people.items()}
        # the transfer set: train's people and voices, other pseudo-speakers than train's
        assert persons.pop("unlabelled") <= persons["train"]
        assert not set(speakers["unlabelled"]) & set(speakers["train"])
        assert len(speakers["unlabelled"]) == 270
        assert not persons["train"] & persons["dev"] and not persons["train"] & persons["test"]
        assert not persons["dev"] & persons["test"]
        assert all(len(set(voices)) == len(voices) for voices in speakers.values())
        assert len(speakers["train"]) == 45
        if lang == "en":  # eight people: piper's joe, pico's lh and kh, kal, ked, slt train; awb dev; rms test
            assert persons == {"train": {"piper-joe", "pico-lh", "pico-kh", "kal", "ked", "slt"},
                               "dev": {"awb"}, "test": {"rms"}}
            assert sum(v.engine != "espeak" for v in speakers["train"]) == 22
        elif lang in ("es", "de"):  # pico's own; kal and ked by phone mapping: their English split
            own = "pico-zl" if lang == "es" else "pico-gl"
            assert persons == {"train": {own, "kal", "ked"}, "dev": set(), "test": set()}
        elif lang == "it":  # three people (pico's cm, festival's pc and lp): the last is tested
            assert persons == {"train": {"pico-cm", "pc"}, "dev": set(), "test": {"lp"}}
        else:  # one person: train only
            assert persons["train"] and not persons["dev"] and not persons["test"]


def test_a_person_keeps_their_own_languages_split_when_speaking_another(monkeypatch):
    """Were kal recorded for dev in English, kal-es would be a dev speaker of Spanish."""
    from speechkd.data import corpus
    from speechkd.data.voices.base import EngineVoice

    monkeypatch.setattr(corpus, "recorded_speaker_splits",
                        lambda voices: {v.speaker: "dev" if v.speaker == "kal" else "train"
                                        for v in voices})
    catalogue = (EngineVoice("festival", "kal", "en", "kal", (100,), (95,)),
                 EngineVoice("festival", "kal-es", "es", "kal", (100,), (95,), "en"))
    monkeypatch.setitem(ENGINES, "festival", (ENGINES["festival"][0], catalogue))
    monkeypatch.setattr(ENGINES["festival"][0], "missing_voices", staticmethod(lambda v: {}))
    assert corpus.person_splits(["festival"]) == {"kal": "dev"}
    speakers = split_speakers("small", 0, "es", ("espeak", "festival"))
    assert {v.variant for v in speakers["dev"] if v.engine == "festival"} == {"kal-es"}
    assert not any(v.engine == "festival" for v in speakers["train"] + speakers["test"])


def test_espeak_only_keeps_the_previous_speakers():
    for lang in ("en", "ru"):
        only = split_speakers("small", 5, lang, ("espeak",))
        mixed = split_speakers("small", 5, lang, ALL)
        for split in ("train", "dev", "test"):
            assert all(v.engine == "espeak" for v in only[split])
            espeak_mixed = [v for v in mixed[split] if v.engine == "espeak"]
            assert espeak_mixed == only[split][:len(espeak_mixed)]


def test_missing_engine_warns_and_the_corpus_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(ENGINES["pico"][0], "available", staticmethod(lambda: False))
    with pytest.warns(UserWarning, match=r"pico \(pip install ttspico\); "
                                         r"festival \(apt-get install festival.*flite"):
        assert resolve_engines() == ["espeak"]
    with pytest.raises(ValueError, match="unknown synthesis engines"):
        resolve_engines(["espeak", "mbrola"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = build_corpus("numbers", "tiny", tmp_path / "c", languages=["en"],
                               progress=False, engines=["espeak", "flite"])
    assert len([w for w in caught if "not installed" in str(w.message)]) == 1
    assert summary["engines"] == ["espeak"]
    assert {r["engine"] for r in read_manifest(tmp_path / "c" / "train.csv")} == {"espeak"}


def test_missing_festival_voice_package_warns_and_the_voice_is_left_out(tmp_path, monkeypatch):
    from speechkd.data.voices import festival

    (tmp_path / "english" / "kal_diphone").mkdir(parents=True)
    monkeypatch.setattr(festival, "VOICE_FOLDERS", (str(tmp_path),))
    monkeypatch.setattr(festival.FestivalSynthesizer, "available", staticmethod(lambda: True))
    with pytest.warns(UserWarning, match=r"festival ked, festival slt, .*festival nsh, "
                                         r"festival-xling ked-es, festival-xling ked-de, "
                                         r"festival-xling ked-fr "
                                         r"\(apt-get install festvox-kdlpc16k "
                                         r"festvox-us-slt-hts"):
        assert resolve_engines(["espeak", "festival", "festival-xling"]) == \
            ["espeak", "festival", "festival-xling"]
    assert [v.variant for v in recorded_voices("en", ["festival"])] == ["kal"]
    assert [v.variant for v in recorded_voices("es", ["festival", "festival-xling"])] == ["kal-es"]
    assert recorded_voices("es", ["festival"]) == []
    assert recorded_voices("ru", ["festival"]) == []
    assert all(v.engine == "espeak" for v in split_speakers("small", 0, "ru", ALL)["train"]
               if v.engine != "flite")


def test_manifest_and_summary_record_engine_and_voice(tmp_path):
    needs("pico"), needs("festival"), needs("flite")
    out = tmp_path / "c"
    summary = build_corpus("numbers", "tiny", out, languages=["en", "ru"], progress=False)
    assert summary["engines"] == ["espeak", "pico", "festival", "flite"]
    rows = {split: read_manifest(out / f"{split}.csv") for split in ("train", "dev", "test")}
    engines = {(r["lang"], r["engine"]) for r in rows["train"]}
    assert {("en", "pico"), ("en", "espeak"), ("ru", "festival"), ("ru", "espeak")} <= engines
    assert {r["engine"] for r in rows["test"] if r["lang"] == "en"} == {"espeak", "flite"}
    for split, split_rows in rows.items():
        listed = {s["name"]: s for s in summary["speakers"][split]["en"]
                  + summary["speakers"][split]["ru"]}
        for row in split_rows:
            assert (listed[row["spk_id"]]["engine"], listed[row["spk_id"]]["voice"]) == \
                (row["engine"], row["voice"])
    assert sum(summary["splits"]["train"]["en"]["engines"].values()) == \
        summary["splits"]["train"]["en"]["utterances"]
    # another engine choice in the same folder: manifests for the engines asked, no mixing
    # (IDs name engine, voice, rate and pitch, so no audio is reused under another voice)
    espeak_only = build_corpus("numbers", "tiny", out, languages=["en", "ru"], progress=False,
                               engines=["espeak"])
    assert espeak_only["fingerprint"] != summary["fingerprint"]
    for split in ("train", "dev", "test"):
        assert {row["engine"] for row in read_manifest(out / f"{split}.csv")} == {"espeak"}


def test_corpus_of_an_older_builder_is_rebuilt_not_reused(tmp_path):
    out = tmp_path / "old"
    (out / "audio" / "clean" / "en").mkdir(parents=True)
    stale = out / "audio" / "clean" / "en" / "en-m1r170p40-00000.flac"
    stale.write_bytes(b"audio of builder 2")
    (out / "train.csv").write_text("ID,duration,wav,spk_id,lang,domain,wrd\n")
    (out / ".corpus-build.json").write_text(json.dumps(
        {"builder_version": BUILDER_VERSION - 1, "task": "numbers", "size": "tiny", "seed": 0}))
    with pytest.warns(UserWarning, match=f"builder version {BUILDER_VERSION - 1} .* rebuilt"):
        summary = build_corpus("numbers", "tiny", out, languages=["en"], progress=False,
                               engines=["espeak"])
    assert json.loads((out / ".corpus-build.json").read_text())["builder_version"] == \
        BUILDER_VERSION
    rows = read_manifest(out / "train.csv")
    assert len(rows) == summary["splits"]["train"]["en"]["utterances"] > 0
    assert not stale.exists() or stale.read_bytes() != b"audio of builder 2"
    # other options in the folder are still refused, never deleted
    with pytest.raises(ValueError, match="seed: 0 there, 1 asked"):
        build_corpus("numbers", "tiny", out, seed=1, languages=["en"], progress=False,
                     engines=["espeak"])
