"""Seeded, recorded training conditions: corrupted transcripts and long-tailed languages."""

import pytest

from speechkd.data.conditions import corrupt_transcripts, long_tailed_subset


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
