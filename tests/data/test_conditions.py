"""Seeded, recorded training conditions: corrupted transcripts, long-tailed languages and words."""

import pytest

from speechkd.data.conditions import (
    corrupt_transcripts,
    long_tailed_subset,
    long_tailed_words,
    tail_utterances,
)


def manifest(per_lang=20):
    words = {"en": ["one", "two", "three", "four", "five"], "de": ["eins", "zwei", "drei", "vier"]}
    rows = []
    for lang, vocab in words.items():
        for i in range(per_lang):
            rows.append({"ID": f"{lang}{i}", "duration": "1.5", "wav": "x.wav", "spk_id": "s", "lang": lang,
                         "domain": "clean", "wrd": " ".join(vocab[(i + j) % len(vocab)] for j in range(3))})
    return rows


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.6])
def test_corruption_changes_the_recorded_share_and_nothing_else(rate):
    rows = manifest()
    noisy, record = corrupt_transcripts(rows, rate, seed=1)
    changed = {r["ID"] for r, o in zip(noisy, rows) if r["wrd"] != o["wrd"]}
    assert changed == {entry["ID"] for entry in record}
    assert len(changed) <= round(rate * len(rows)) and len(changed) >= round(rate * len(rows)) - 2
    for entry in record:
        row = next(r for r in noisy if r["ID"] == entry["ID"])
        assert entry["corrupted"] == row["wrd"]
        lang_words = {w for r in rows if r["lang"] == row["lang"] for w in r["wrd"].split()}
        assert set(row["wrd"].split()) <= lang_words  # swaps and substitutions stay in the language
    if rate:
        assert {e["kind"] for e in record} == {"swap", "substitute"}
    assert corrupt_transcripts(rows, rate, seed=1) == (noisy, record)  # seeded
    assert rows == manifest()  # the input is not modified
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        corrupt_transcripts(rows, 1.5)


def test_long_tail_keeps_languages_in_ratio_with_a_floor():
    rows = manifest(per_lang=40)
    kept, record = long_tailed_subset(rows, {"en": 10, "de": 1}, seed=0, min_utterances=2)
    assert record == {"en": {"utterances": 40, "seconds": 60.0}, "de": {"utterances": 4, "seconds": 6.0}}
    assert [r["ID"] for r in kept] == [r["ID"] for r in rows if r in kept]  # manifest order
    kept, record = long_tailed_subset(rows, {"en": 100, "de": 1}, seed=0, min_utterances=2)
    assert record["de"]["utterances"] == 2
    with pytest.raises(ValueError, match=r"languages \['fr'\] have no utterance"):
        long_tailed_subset(rows, {"fr": 1, "en": 1})


def single_word_manifest(per_word=100):
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return [{"ID": f"en-{word}-{i}", "duration": "1.0", "wav": "x.wav", "spk_id": "s", "lang": "en",
             "domain": "clean", "wrd": word} for word in words for i in range(per_word)]


def test_word_tail_makes_a_seeded_share_of_words_rarer_and_keeps_the_rest():
    rows = single_word_manifest() + [{"ID": "en-rare", "duration": "1.0", "wav": "x.wav", "spk_id": "s",
                                      "lang": "en", "domain": "clean", "wrd": "eleven"}]
    kept, record = long_tailed_words(rows, tail_share=0.2, tail_ratio=0.1, seed=3)
    tail = record["tail"]["en"]
    assert len(tail) == 2 and "eleven" not in tail  # 20 % of the 10 words in >= 5 utterances
    for word, (before, after) in record["word_counts"]["en"].items():
        if word in tail:
            assert before == 100 and 2 <= after <= 25  # Binomial(100, 0.1): far inside these bounds
        else:
            assert after == before  # one word per utterance: a head word loses nothing
    assert record["kept"] == {"head_utterances": 801, "of": 1001,
                              "tail_utterances": sum(record["word_counts"]["en"][w][1] for w in tail)}
    assert [r["ID"] for r in kept] == [r["ID"] for r in rows if r in kept]  # manifest order
    assert long_tailed_words(rows, tail_share=0.2, tail_ratio=0.1, seed=3) == (kept, record)  # seeded
    assert long_tailed_words(rows, tail_share=0.2, tail_ratio=0.1, seed=4)[1]["tail"] != record["tail"]

    test = [{"ID": "a", "lang": "en", "wrd": f"{tail[0]} one"}, {"ID": "b", "lang": "en", "wrd": "eleven"},
            {"ID": "c", "lang": "de", "wrd": tail[1]}]  # another language's word of the same spelling is not tail
    assert tail_utterances(test, record["tail"]) == {"a"}


def test_word_tail_refuses_bad_shares_and_a_language_without_frequent_words():
    rows = single_word_manifest(per_word=3)
    with pytest.raises(ValueError, match="no en word is in 5 or more and at most 10% of its 30 utterances"):
        long_tailed_words(rows)
    with pytest.raises(ValueError, match="at most 5%"):  # every word of a 1000-utterance manifest is in 10 %
        long_tailed_words(single_word_manifest(), max_share=0.05)
    with pytest.raises(ValueError, match="tail_share must be in"):
        long_tailed_words(rows, tail_share=1.0)
