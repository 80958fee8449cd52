import json
import math

from speechkd.metrics import ErrorRates, write_results_json


def _rates():
    rates = ErrorRates()
    rates.append(
        ["en-1", "en-2", "de-1", "de-2"],
        ["the cat sat on the mat", "a b", "eins zwei drei", ""],
        ["the bat sat on mat", "a b c", "eins zwei drei", "hallo"],
        langs=["en", "en", "de", "de"],
        domains=["clean", "telephone", "clean", "telephone"],
    )
    return rates


def test_hand_computed_counts():
    summary = _rates().summary()
    # en-1: cat->bat (S), "the" deleted (D); en-2: "c" inserted (I);
    # de-2: empty reference, "hallo" inserted (I). Reference words: 6 + 2 + 3 + 0 = 11
    assert (summary["substitutions"], summary["deletions"], summary["insertions"]) == (1, 1, 2)
    assert summary["ref_words"] == 11 and summary["word_edits"] == 4
    assert math.isclose(summary["wer"], 100 * 4 / 11)
    assert summary["n_utts"] == 4 and summary["n_empty_ref"] == 1
    # characters: en-1 "the cat sat on the mat" (22) vs "the bat sat on mat": 1 sub + 4 del;
    # en-2 "a b" (3) vs "a b c": 2 ins; de-1 0; de-2: 5 ins. Reference chars 22 + 3 + 14 + 0 = 39
    assert summary["ref_chars"] == 39 and summary["char_edits"] == 12
    assert math.isclose(summary["cer"], 100 * 12 / 39)


def test_per_language_and_domain():
    summary = _rates().summary()
    assert math.isclose(summary["per_lang"]["en"]["wer"], 100 * 3 / 8)
    assert math.isclose(summary["per_lang"]["de"]["wer"], 100 * 1 / 3)
    assert summary["per_lang"]["de"]["n_empty_ref"] == 1
    assert math.isclose(summary["per_domain"]["clean"]["wer"], 100 * 2 / 9)
    assert math.isclose(summary["per_domain"]["telephone"]["wer"], 100 * 2 / 2)


def test_only_empty_references_do_not_divide_by_zero():
    rates = ErrorRates()
    rates.append(["x", "y"], ["", ""], ["", "oops"])
    summary = rates.summary()
    assert summary["wer"] is None and summary["cer"] is None
    assert summary["insertions"] == 1 and summary["n_empty_ref"] == 2
    assert summary["per_lang"] == {} and summary["per_domain"] == {}


def test_wer_file_format(tmp_path):
    path = tmp_path / "wer_test.txt"
    _rates().write_wer_file(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "%WER 36.36 [ 4 / 11, 2 ins, 1 del, 1 sub ]"
    assert lines[1] == "%SER 75.00 [ 3 / 4 ]"
    assert lines[2] == "Scored 4 sentences, 0 not present in hyp."
    assert "ALIGNMENTS" in lines
    header = lines.index("en-1, %WER 33.33 [ 2 / 6, 0 ins, 1 del, 1 sub ]")
    _ref, ops, hyp = (line.split(";") for line in lines[header + 1: header + 4])
    assert [o.strip() for o in ops] == ["=", "S", "=", "=", "D", "="]
    assert [h.strip() for h in hyp] == ["the", "bat", "sat", "on", "<eps>", "mat"]
    assert "de-2, %WER 100.00 [ 1 / 0, 1 ins, 0 del, 0 sub ]" in lines


def test_results_json_merges(tmp_path):
    path = tmp_path / "results.json"
    write_results_json(path, {"params": 10, "test": {"clean": {"wer": 5.0}}})
    merged = write_results_json(path, {"test": {"telephone": {"wer": 9.0}}, "frame_shift_ms": 20})
    on_disk = json.loads(path.read_text())
    assert on_disk == merged == {
        "params": 10,
        "frame_shift_ms": 20,
        "test": {"clean": {"wer": 5.0}, "telephone": {"wer": 9.0}},
    }


def test_utterance_errors_round_trip_through_the_wer_file(tmp_path):
    from speechkd.metrics import ErrorRates, read_utterance_errors

    rates = ErrorRates()
    rates.append(["u1", "u2"], ["one two three", "four"], ["one too three", ""])
    path = tmp_path / "wer_test.txt"
    rates.write_wer_file(path)
    assert read_utterance_errors(path) == {"u1": (1, 3), "u2": (1, 1)}


def test_character_errors_read_back_from_the_wer_file_match_the_summary(tmp_path):
    from speechkd.metrics import ErrorRates, read_utterance_char_errors

    rates = ErrorRates()
    rates.append(["u1", "u2", "u3"], ["one two three", "four", "five six"], ["one too three", "", "five six seven"])
    path = tmp_path / "wer_test.txt"
    rates.write_wer_file(path)
    errors = read_utterance_char_errors(path)
    assert errors == {"u1": (1, 13), "u2": (4, 4), "u3": (6, 8)}  # "two"->"too"; "four" deleted; " seven" inserted
    edits, chars = map(sum, zip(*errors.values()))
    assert 100.0 * edits / chars == rates.summary()["cer"]


def test_paired_bootstrap_wer_knows_the_answer():
    import pytest

    from speechkd.metrics import paired_bootstrap_wer

    same = {f"u{i}": (i % 3, 4) for i in range(50)}
    identical = paired_bootstrap_wer(same, same)
    assert identical == {"difference": 0.0, "low": 0.0, "high": 0.0, "n_utts": 50}
    # b makes one more error on every utterance: +25 points, whatever the resample
    worse = {u: (e + 1, n) for u, (e, n) in same.items()}
    shifted = paired_bootstrap_wer(same, worse)
    assert shifted["difference"] == pytest.approx(25.0)
    assert shifted["low"] == pytest.approx(25.0) and shifted["high"] == pytest.approx(25.0)
    # b better on half the utterances only: the interval straddles the point estimate, excludes 0
    mixed = {u: (max(e - (i % 2), 0), n) for i, (u, (e, n)) in enumerate(same.items())}
    result = paired_bootstrap_wer(same, mixed, n_resamples=500)
    assert result["low"] < result["difference"] < result["high"] < 0
