"""The report's confidence intervals, on wer files the tests write."""

import pytest

from speechkd.metrics import ErrorRates
from speechkd.report import confidence_intervals, markdown_table, summary_lines


def write_wer_file(path, hyps, refs):
    rates = ErrorRates()
    rates.append([f"u{i:02d}" for i in range(len(refs))], refs, hyps)
    rates.write_wer_file(path)
    return str(path)


def systems(tmp_path, baseline_hyps, student_hyps, ensemble_hyps, refs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return {name: write_wer_file(tmp_path / f"wer_{name}.txt", hyps, refs)
            for name, hyps in (("baseline", baseline_hyps), ("student_kd", student_hyps),
                               ("ensemble", ensemble_hyps))}


def test_every_resample_gives_the_same_gap_when_every_utterance_does(tmp_path):
    refs = ["one two three four"] * 40
    # baseline: 2 of 4 words wrong everywhere, student 1, ensemble 0 -> 50 % of the gap, 25 points gained
    files = systems(tmp_path, ["one too tree four"] * 40, ["one too three four"] * 40, refs, refs)
    result = confidence_intervals(files, "baseline", "student_kd", "ensemble", n_resamples=200)
    assert result["wer"]["baseline"] == pytest.approx([50.0, 50.0])
    assert result["wer"]["ensemble"] == pytest.approx([0.0, 0.0])
    assert result["gain"] == pytest.approx({"value": 25.0, "low": 25.0, "high": 25.0})
    assert result["gap_closed"] == pytest.approx({"value": 50.0, "low": 50.0, "high": 50.0})
    assert result["n_utts"] == 40 and result["n_resamples"] == 200


def test_intervals_widen_with_uneven_utterances_and_are_paired(tmp_path):
    refs = ["one two three four"] * 60
    # the student fixes the baseline's error on every other utterance; the ensemble on all of them
    baseline = ["one too three four"] * 60
    student = ["one two three four" if i % 2 else "one too three four" for i in range(60)]
    files = systems(tmp_path, baseline, student, refs, refs)
    result = confidence_intervals(files, "baseline", "student_kd", "ensemble", n_resamples=500)
    low, high = result["wer"]["student_kd"]
    assert low < 12.5 < high and high - low > 2.0  # 12.5 % WER, a real interval
    gain, closed = result["gain"], result["gap_closed"]
    assert gain["value"] == pytest.approx(12.5) and 0 < gain["low"] < 12.5 < gain["high"]
    assert closed["value"] == pytest.approx(50.0) and closed["low"] < 50.0 < closed["high"]
    # paired: the baseline-ensemble gap is 25 points in every resample, so the gap closed is gain / 25
    assert closed["low"] == pytest.approx(100 * gain["low"] / 25.0)
    cer_low, cer_high = result["cer"]["baseline"]
    assert cer_low == pytest.approx(cer_high) and cer_low > 0  # every utterance has the same character error


def test_no_gap_to_close_gives_no_interval(tmp_path):
    refs = ["one two"] * 10
    files = systems(tmp_path, refs, refs, refs, refs)
    result = confidence_intervals(files, "baseline", "student_kd", "ensemble", n_resamples=50)
    assert result["gap_closed"] is None
    assert result["gain"] == pytest.approx({"value": 0.0, "low": 0.0, "high": 0.0})


def test_an_ensemble_worse_than_the_baseline_leaves_no_gap_to_close(tmp_path):
    # the 2026-11-30 ten-seed run: baseline 33.5, student 58.1, ensemble 70.9 % read as "closes 66 %"
    refs = ["one two three four"] * 20
    files = systems(tmp_path, ["one too three four"] * 20, ["one too tree four"] * 20,
                    ["won too tree four"] * 20, refs)
    result = confidence_intervals(files, "baseline", "student_kd", "ensemble", n_resamples=50)
    assert result["rates"]["ensemble"] > result["rates"]["student_kd"] > result["rates"]["baseline"]
    assert result["gap_closed"] is None
    assert result["gain"]["value"] == pytest.approx(-25.0)
    summary = {"gap_closed_percent": None, "gain_wer_points": -25.0, "gain_ci": [-25.0, -25.0],
               "compression_vs_ensemble": 10.0, "ensemble_strategy": "weighted", "top_k": 8,
               "ensemble_strategies": {"weighted": 75.0}, "teacher_agreement": None}
    assert "no better than the baseline: no gap to close" in summary_lines({"summary": summary})


def test_seeds_pool_into_one_paired_comparison(tmp_path):
    refs = ["one two three four"] * 20
    one_wrong, two_wrong = ["one too three four"] * 20, ["one too tree four"] * 20
    seed_a = systems(tmp_path / "a", one_wrong, refs, refs, refs)  # baseline 25 %, student 0 %
    seed_b = systems(tmp_path / "b", two_wrong, one_wrong, refs, refs)  # baseline 50 %, student 25 %
    files = {name: [seed_a[name], seed_b[name]] for name in seed_a}
    result = confidence_intervals(files, "baseline", "student_kd", "ensemble", n_resamples=100)
    assert result["rates"]["baseline"] == pytest.approx(37.5)  # the mean of the two seeds' WER
    assert result["rates"]["student_kd"] == pytest.approx(12.5)
    assert result["gain"] == pytest.approx({"value": 25.0, "low": 25.0, "high": 25.0})
    assert result["gap_closed"]["value"] == pytest.approx(100 * 25.0 / 37.5)
    # a system decoded once beside students pooled over two seeds: its own WER (50 %; a rate
    # over the pooled reference length, twice its own, read 25)
    once = confidence_intervals({**files, "ensemble": seed_b["baseline"]}, "baseline", "student_kd",
                                "ensemble", n_resamples=100)
    assert once["rates"]["ensemble"] == pytest.approx(50.0)
    assert once["wer"]["ensemble"] == pytest.approx([50.0, 50.0])
    other = write_wer_file(tmp_path / "other.txt", refs[:5], refs[:5])  # a test set of 5 utterances
    with pytest.raises(ValueError, match="other utterances"):
        confidence_intervals({**files, "ensemble": [seed_a["ensemble"], other]}, "baseline", "student_kd", "ensemble")


def test_table_and_summary_print_the_intervals():
    row = {"role": "student", "params": 1e5, "megabytes": 0.4, "frame_shift_ms": 20, "wer": 40.04,
           "cer": 9.0, "per_lang": {"en": 38.0}, "rtf": 0.01, "wer_ci": [35.0, 45.26], "cer_ci": [8.0, 10.0]}
    report = {"models": {"student_kd": row},
              "summary": {"gap_closed_percent": 62.4, "gap_closed_ci": [40.2, 81.0], "gain_wer_points": 12.0,
                          "gain_ci": [6.0, 18.0], "compression_vs_ensemble": 12.0, "ensemble_strategy": "weighted",
                          "top_k": 8, "ensemble_strategies": {"weighted": 30.0}, "teacher_agreement": None}}
    assert "| 40.0 [35.0, 45.3] | 9.0 [8.0, 10.0] |" in markdown_table(report)
    text = summary_lines(report)
    assert "**62 [40, 81] %** of the baseline-to-ensemble WER gap" in text
    assert "12.0 [6.0, 18.0] WER points" in text and "the interval excludes zero" in text
    report["summary"]["gain_ci"] = [-1.0, 18.0]
    assert "includes zero" in summary_lines(report)


def test_the_spike_delay_line_follows_the_distilled_students_settings(tmp_path):
    from speechkd.report import distillation_settings, spike_delay_line

    (tmp_path / "hyperparams.yaml").write_text(
        "alpha: 1.0\nteacher_delay: 2\nmodel: !new:torch.nn.Linear\n    in_features: 2\n    out_features: 2\n")
    settings = distillation_settings(str(tmp_path))
    assert settings == {"alpha": 1.0, "teacher_delay": 2, "w_kd": None}
    assert distillation_settings(str(tmp_path / "absent")) == {"alpha": None, "teacher_delay": None, "w_kd": None}
    assert distillation_settings(None) == {"alpha": None, "teacher_delay": None, "w_kd": None}

    delay = {"tdnn": 2.0, "conformer": None}
    line = spike_delay_line(delay, **settings)
    assert line.startswith("- The student trained alone spikes +2 frames after the teachers")
    assert "reads no teacher frames" in line and "delays" not in line
    assert "delays the teacher targets by 2 frames" in spike_delay_line(delay, alpha=0.5, teacher_delay=2)
    assert "does not delay" in spike_delay_line(delay, alpha=0.5, teacher_delay=0)
    assert "by `teacher_delay` frames" in spike_delay_line(delay)
    # a recipe that weighs the KL apart from alpha (student_hint.yaml): alpha 1 with a KL still delays
    assert "by 2 frames" in spike_delay_line(delay, alpha=1.0, teacher_delay=2, w_kd=0.5)
    assert "reads no teacher frames" in spike_delay_line(delay, alpha=0.5, teacher_delay=2, w_kd=0.0)


def test_the_summary_passes_the_kl_weight_to_the_delay_line():
    summary = {"gap_closed_percent": None, "gain_wer_points": 1.0, "compression_vs_ensemble": 10.0,
               "ensemble_strategy": "average", "top_k": 8, "ensemble_strategies": {"average": 30.0},
               "teacher_agreement": None, "baseline_spike_delay_frames": {"tdnn": 2.0},
               "alpha": 1.0, "teacher_delay": 2, "w_kd": 0.5}
    assert "delays the teacher targets by 2 frames" in summary_lines({"summary": summary})
    assert "reads no teacher frames" in summary_lines({"summary": {**summary, "w_kd": None}})
