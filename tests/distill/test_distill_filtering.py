"""The unlabelled-data agreement filter on hand-built teacher posteriors."""

import pytest
import torch

from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter, make_meta
from speechkd.distill.filtering import (
    agreement_filter,
    cache_agreement_scores,
    edit_distance,
    ensemble_confidence,
    pairwise_cer,
    utterance_agreement,
)

SYMBOLS = ["<blank>", " ", "a", "b"]


def one_hot(tokens, confidence=1.0, vocab=4):
    """``(time, vocab)`` probabilities: ``confidence`` on each frame's token, the rest spread."""
    probs = torch.full((len(tokens), vocab), (1.0 - confidence) / (vocab - 1))
    probs[torch.arange(len(tokens)), torch.tensor(tokens)] = confidence
    return probs


def test_scores_on_hand_built_case():
    assert edit_distance("ab", "ba") == 2 and edit_distance("", "abc") == 3
    assert pairwise_cer(["ab", "ab", "ab"]) == 0.0
    # pairs: (ab, ab) 0, (ab, bb) 50, (ab, bb) 50 -> mean 33.3
    assert pairwise_cer(["ab", "ab", "bb"]) == pytest.approx(100 / 3)
    assert pairwise_cer(["", ""]) == 0.0 and pairwise_cer(["a"]) == 0.0

    agree = torch.stack([one_hot([0, 2, 0, 3], 0.9), one_hot([0, 2, 0, 3], 0.7)])
    scores = utterance_agreement(agree, SYMBOLS)
    assert scores["hyps"] == ["ab", "ab"] and scores["teacher_cer"] == 0.0
    # non-blank frames 1 and 3: ensemble top probability (0.9 + 0.7) / 2
    assert scores["confidence"] == pytest.approx(0.8)
    blank_only = torch.stack([one_hot([0, 0], 0.6)])
    assert ensemble_confidence(blank_only) == pytest.approx(0.6)


def test_filter_keeps_agreeing_and_drops_disagreeing():
    utterances = {
        "agree": torch.stack([one_hot([2, 0, 3], 0.9), one_hot([2, 0, 3], 0.9)]),     # "ab" / "ab"
        "differ": torch.stack([one_hot([2, 0, 3], 0.9), one_hot([3, 0, 2], 0.9)]),    # "ab" / "ba"
        "unsure": torch.stack([one_hot([2, 0, 3], 0.4), one_hot([2, 0, 3], 0.4)]),    # "ab", low confidence
    }
    scores = {utt: utterance_agreement(p, SYMBOLS) for utt, p in utterances.items()}
    assert scores["differ"]["teacher_cer"] == 100.0
    # 'differ', every frame: one teacher 0.9 on a token, the other 0.1/3 -> top (0.9 + 0.1/3) / 2
    assert scores["differ"]["confidence"] == pytest.approx((0.9 + 0.1 / 3) / 2, abs=1e-6)

    kept, report = agreement_filter(scores, "teacher_cer", 50.0)
    assert kept == ["agree", "unsure"]
    assert report == {"method": "teacher_cer", "threshold": 50.0, "offered": 3, "kept": 2,
                      "kept_share": pytest.approx(2 / 3)}
    kept, report = agreement_filter(scores, "confidence", 0.6)
    assert kept == ["agree"] and report["kept_share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown agreement filter"):
        agreement_filter(scores, "vote", 0.5)


def test_scores_from_a_cache(tmp_path):
    """Two teachers, one at 10 ms and one at 20 ms: pooled to 20 ms, then scored."""
    fine = one_hot([2, 2, 0, 0, 3, 3], 0.9)          # 10 ms frames
    coarse = one_hot([2, 0, 3], 0.9)                 # 20 ms frames
    entries = [{"name": "fine", "fingerprint": "f", "frame_shift_ms": 10},
               {"name": "coarse", "fingerprint": "c", "frame_shift_ms": 20}]
    meta = make_meta(entries, SYMBOLS, features={}, k=0)
    with PosteriorCacheWriter(tmp_path / "cache", meta) as writer:
        writer.add("u1", [fine.log().numpy(), coarse.log().numpy()])
    cache = PosteriorCache.open(tmp_path / "cache")
    scores = cache_agreement_scores(cache, ["u1"])
    assert scores["u1"]["hyps"] == ["ab", "ab"]
    assert scores["u1"]["teacher_cer"] == 0.0
    assert scores["u1"]["confidence"] == pytest.approx(0.9, abs=1e-3)
