"""Tests of cross-lingual phone mapping (espeak-ng phonemes -> festival English phones)
and of the festival voices that speak another language with it."""

import numpy as np
import pytest

from speechkd.data.corpus import build_corpus
from speechkd.data.manifest import read_manifest
from speechkd.data.numbers import MONTHS, date_words, spell
from speechkd.data.sentences import SENTENCE_LANGUAGES, sentence_pools
from speechkd.data.voices import ENGINES, make_synthesizer
from speechkd.data.voices.base import Voice, voiced_frames
from speechkd.data.voices.espeak import EspeakSynthesizer
from speechkd.data.voices.phones import (
    ESPEAK_LANGUAGES,
    PHONE_MAPS,
    VOWELS,
    UnmappedPhonemeError,
    lexicon_entries,
    map_phonemes,
    syllables,
    word_key,
)

RADIO_PHONES = VOWELS | {"b", "ch", "d", "dh", "dx", "f", "g", "hh", "jh", "k", "l", "m", "n",
                         "ng", "p", "r", "s", "sh", "t", "th", "v", "w", "y", "z", "zh"}


def numbers_vocabulary(lang):
    """Every word the numbers task can say in ``lang``: cardinals 0..9999, months and
    the dates' days (1..28) and years (1950..2030)."""
    words = set(MONTHS[lang].split())
    for number in range(10000):
        words |= set(spell(number, lang).split())
    for day in range(1, 29):
        words |= set(date_words(day, 1, 2000, lang).split())
    for year in range(1950, 2031):
        words |= set(date_words(1, 1, year, lang).split())
    return sorted(words)


def assert_every_phoneme_is_mapped(words, lang, stressed=True):
    """``stressed``: every word of two or more syllables has a stressed one (not so for
    the function words of sentences, "denen", which espeak-ng leaves unstressed)."""
    seen = set()
    transcriptions = EspeakSynthesizer().phonemes(words, ESPEAK_LANGUAGES[lang])
    for word, phonemes in zip(words, transcriptions):
        phones = map_phonemes(phonemes, lang, word)  # raises on an unmapped phoneme
        seen |= {phone for phone, _ in phones}
        word_syllables = syllables(phones)
        assert [p for s, _ in word_syllables for p in s] == [p for p, _ in phones]
        assert all(sum(p in VOWELS for p in s) <= 1 for s, _ in word_syllables), word
        if stressed and len(word_syllables) > 1:
            assert sum(stress for _, stress in word_syllables) >= 1, (word, phonemes)
    assert seen <= RADIO_PHONES and len(seen) > 15
    assert all(set(value.split()) <= RADIO_PHONES for value in PHONE_MAPS[lang].values())


@pytest.mark.parametrize("lang", sorted(PHONE_MAPS))
def test_every_phoneme_of_the_numbers_vocabulary_is_mapped_to_festival_phones(lang):
    vocabulary = numbers_vocabulary(lang)
    assert len(vocabulary) > 40
    assert_every_phoneme_is_mapped(vocabulary, lang)


@pytest.mark.parametrize("lang", sorted(set(PHONE_MAPS) & set(SENTENCE_LANGUAGES)))
def test_every_phoneme_of_the_sentences_vocabulary_is_mapped(lang):
    """English loanwords included: espeak-ng reads them with English phonemes."""
    try:
        pools = sentence_pools(lang)
    except FileNotFoundError as error:  # fortune packages not installed
        pytest.skip(str(error))
    vocabulary = sorted({word for pool in pools.values() for text in pool
                         for word in text.split()})
    assert_every_phoneme_is_mapped(vocabulary, lang, stressed=False)


def test_unmapped_phoneme_is_a_clear_error_naming_it():
    with pytest.raises(UnmappedPhonemeError, match=r"phoneme 'ʘ' of es word 'xyz' .*PHONE_MAPS"):
        map_phonemes(["t", "ˈʘ", "a"], "es", "xyz")
    with pytest.raises(ValueError, match="no phone map for language 'qq'"):
        map_phonemes(["a"], "qq")


def test_syllables_take_the_longest_legal_onset_and_stress_follows_the_mark():
    phones = map_phonemes(["b", "ˌeɪ", "n", "t", "i", "t", "ɾ", "ˈe", "s"], "es")
    assert syllables(phones) == [(["b", "ey", "n"], 0), (["t", "iy"], 0),
                                 (["t", "r", "ey", "s"], 1)]
    phones = map_phonemes(["d", "j", "e", "s", "i", "n", "w", "ˈe", "β", "e"], "es")
    assert [s for s, _ in syllables(phones)] == [["d", "y", "ey"], ["s", "iy"], ["n", "w", "ey"],
                                                ["b", "ey"]]
    assert syllables(map_phonemes(["ɲ", "ˈa"], "es")) == [(["n", "y", "aa"], 1)]
    # only secondary stress ("bekam"): that syllable is stressed; none ("denen"): none is
    assert syllables(map_phonemes(["b", "ə", "k", "ˌɑː", "m"], "de")) == \
        [(["b", "ax"], 0), (["k", "aa", "m"], 1)]
    assert syllables(map_phonemes(["d", "eː", "n", "ə", "n"], "de")) == \
        [(["d", "ey"], 0), (["n", "ax", "n"], 0)]
    # an English word in German text, between espeak-ng's language-switch marks
    assert map_phonemes(["(en)", "ð", "ˈə", "(de)"], "de") == [("dh", 0), ("ax", 1)]


def test_word_keys_are_ascii_and_distinct_words_never_share_one():
    taken = {}
    assert word_key("veintitrés", taken) == "veintitres"
    assert word_key("veintitres", taken) == "veintitresq"
    assert word_key("veintitrés", taken) == "veintitres"
    assert word_key("año", taken) == "ano"
    text, entries = lexicon_entries("Ciento, uno; ciento.", "es", EspeakSynthesizer())
    assert text == "ciento uno ciento"
    assert [key for key, _ in entries] == ["ciento", "uno"]


@pytest.mark.parametrize("lang, text", [("es", "veintitrés ciento uno"),
                                        ("de", "dreiundzwanzig hundert eins"),
                                        ("fr", "vingt-trois cent un")])
def test_english_voice_speaks_other_languages_deterministically_with_plausible_timing(lang, text):
    if not ENGINES["festival"][0].available():
        pytest.skip("festival is not installed (make debs installs it)")
    festival, espeak = make_synthesizer("festival"), EspeakSynthesizer()
    voice = Voice(f"kal-{lang}", 100, 105, "festival")
    reference = festival.synthesize(text, lang, voice)
    festival.synthesize("neun zwei", lang, voice)
    assert np.array_equal(festival.synthesize(text, lang, voice), reference)
    assert np.array_equal(make_synthesizer("festival").synthesize(text, lang, voice), reference)
    espeak_wav = espeak.synthesize(text, lang, Voice("m3", 175, 50))
    for wav in (reference, festival.synthesize(text, lang, Voice(f"ked-{lang}", 100, 105,
                                                                        "festival"))):
        # three words at a speaking rate near espeak-ng's: 0.2-0.8 s a word
        assert 0.2 < len(wav) / 16000 / 3 < 0.8
        assert 0.7 < len(wav) / len(espeak_wav) < 2.0
        # speech throughout: no stretch of silence longer than a pause between words
        voiced = voiced_frames(wav, 16000)
        gaps = np.diff(np.flatnonzero(voiced))
        assert voiced.mean() > 0.6 and gaps.max() < 30
    with pytest.raises(ValueError, match=f"speaks {lang}, not en"):
        festival.synthesize("hello", "en", voice)


def test_spanish_corpus_gets_the_phone_mapped_voices_in_train(tmp_path):
    if not ENGINES["festival"][0].available():
        pytest.skip("festival is not installed (make debs installs it)")
    summary = build_corpus("numbers", "tiny", tmp_path / "c", languages=["es"], progress=False,
                           engines=["espeak", "festival", "festival-xling"])
    assert summary["voices"] == ["festival:kal-es", "festival:ked-es"]
    rows = {split: read_manifest(tmp_path / "c" / f"{split}.csv") for split in ("train", "test")}
    spoken = [row for row in rows["train"] if row["engine"] == "festival"]
    assert spoken and {row["voice"] for row in spoken} <= {"kal-es", "ked-es"}
    assert all(row["spk_id"].startswith("festivalk") and "-" not in row["spk_id"]
               for row in spoken)
    assert {row["engine"] for row in rows["test"]} == {"espeak"}
    for row in spoken:  # a Spanish number at a speaking rate: 0.2-1.0 s a word
        assert 0.2 < row["duration"] / len(row["wrd"].split()) < 1.0
