"""Spike-timing agreement on hand-built spiky posteriors."""

import numpy as np
import pytest
from distill_helpers import meta_for

from speechkd.distill.agreement import (
    agreeing_spikes,
    agreement_for_cache_folder,
    format_agreement,
    greedy_collapse,
    teacher_agreement,
)
from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter

SYMBOLS = ["<blank>", "<space>", "a", "b"]


def spiky(tokens_at: dict[int, int], frames: int) -> np.ndarray:
    """(frames, 4) log-probs: blank everywhere except the given frame -> token spikes."""
    probs = np.full((frames, 4), 0.02)
    probs[:, 0] = 0.94
    for t, token in tokens_at.items():
        probs[t] = 0.02
        probs[t, token] = 0.94
    return np.log(probs)


def test_agreeing_spikes_within_one_frame():
    a = np.array([-1, 2, -1, -1, 3, -1])
    b = np.array([-1, -1, 2, -1, -1, -1])
    assert agreeing_spikes(a, b) == (1, 2)
    assert agreeing_spikes(b, a) == (1, 1)
    assert agreeing_spikes(a, b, tolerance=0) == (0, 2)
    assert greedy_collapse(np.array([0, 2, 2, 0, 2, 1, 3])) == [2, 2, 1, 3]


def test_teacher_agreement_report(tmp_path):
    meta = meta_for(SYMBOLS, shifts=(20, 20), k=2, names=["early", "late"])
    # "ab a": early spikes on frames 1,3,5,7; late on 2,4,8,9 (the space 3 frames late)
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        writer.add(
            "u1",
            [spiky({1: 2, 3: 3, 5: 1, 7: 2}, 10), spiky({2: 2, 4: 3, 8: 1, 9: 2}, 10)],
            errors_per_teacher=[(0.0, 0.0), (50.0, 25.0)],
        )
        writer.set_dev_wer([10.0, 30.0])
    cache = PosteriorCache.open(tmp_path)
    report = teacher_agreement(cache, [{"ID": "u1", "wrd": "ab a"}, {"ID": "gone", "wrd": "x"}])
    assert report["spikes"] == {"early": 4, "late": 4}
    assert report["pairwise"]["early"]["late"] == pytest.approx(0.5)  # a@1~2, b@3~4
    assert report["pairwise"]["late"]["early"] == pytest.approx(0.5)
    assert report["overall"] == pytest.approx(0.5)
    assert report["wer"]["teacher early"] == 0.0 and report["wer"]["teacher late"] == 0.0
    assert report["wer"]["best"] == 0.0
    # averaging misaligned spikes still decodes here (no frame has both spikes below blank)
    assert set(report["wer"]) == {
        "teacher early",
        "teacher late",
        "average",
        "geometric",
        "weighted",
        "best",
        "confidence",
    }
    assert report["missing"] == 1 and report["skipped"] == {}
    table = format_agreement(report)
    assert "| early | 4 | — | 50.0% |" in table and "Overall agreement: 50.0%" in table


def test_strategies_without_their_inputs_are_skipped(tmp_path):
    meta = meta_for(SYMBOLS, shifts=(20,), k=0)
    with PosteriorCacheWriter(tmp_path, meta) as writer:
        writer.add("u1", [spiky({1: 2}, 4)])
    report = teacher_agreement(PosteriorCache.open(tmp_path), [{"ID": "u1", "wrd": "a"}])
    assert set(report["skipped"]) == {"weighted", "best"}
    assert np.isnan(report["overall"])
    assert report["wer"]["average"] == 0.0
    assert "skipped: no dev WER" in format_agreement(report)


def test_agreement_for_cache_folder_reads_the_recorded_manifest(tmp_path):
    from speechkd.data.manifest import write_manifest

    row = {
        "ID": "en-s1-00001",
        "duration": 0.2,
        "wav": "$data_root/x.flac",
        "spk_id": "s1",
        "lang": "en",
        "domain": "clean",
        "wrd": "a",
    }
    write_manifest(tmp_path / "dev.csv", [row])
    meta = meta_for(SYMBOLS, shifts=(20,), k=0)
    meta["manifest"] = "../dev.csv"
    with PosteriorCacheWriter(tmp_path / "cache", meta) as writer:
        writer.add(row["ID"], [spiky({1: 2}, 4)])
    table = agreement_for_cache_folder(tmp_path / "cache")
    assert "| teacher t0 | 0.00 |" in table
    del meta["manifest"]
    with PosteriorCacheWriter(tmp_path / "bare", meta) as writer:
        writer.add(row["ID"], [spiky({1: 2}, 4)])
    with pytest.raises(ValueError, match="pass --manifest"):
        agreement_for_cache_folder(tmp_path / "bare")
    assert "| average | 0.00 |" in agreement_for_cache_folder(
        tmp_path / "bare", tmp_path / "dev.csv"
    )


def test_spike_offsets_measure_how_late_the_other_model_spikes():
    import numpy as np

    from speechkd.distill.agreement import spike_offsets

    teacher = np.array([-1, 3, -1, -1, 5, 5, -1, 3, -1, -1, -1])
    student = np.array([-1, -1, -1, 3, -1, -1, 5, -1, -1, 3, -1])
    assert spike_offsets(teacher, student) == [2, 2, 2]
    assert spike_offsets(student, teacher) == [-2, -2, -2]
    assert spike_offsets(teacher, np.full(11, -1)) == []
