"""Each ensemble strategy against its formula on hand-built posteriors."""

import math

import pytest
import torch

from speechkd.distill.ensemble import (
    STRATEGIES,
    average,
    best,
    combine,
    confidence,
    geometric,
    weighted,
    weights_from_dev_wer,
)

# (batch=2, teachers=2, time=1, dim=3)
P = torch.tensor(
    [
        [[[0.7, 0.2, 0.1]], [[0.1, 0.6, 0.3]]],
        [[[0.5, 0.5, 0.0]], [[0.2, 0.2, 0.6]]],
    ],
    dtype=torch.float64,
)


def test_average_is_the_arithmetic_mean():
    assert torch.allclose(average(P)[0, 0], torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))


def test_geometric_is_the_normalized_log_linear_mean():
    g = torch.tensor([math.sqrt(0.07), math.sqrt(0.12), math.sqrt(0.03)], dtype=torch.float64)
    assert torch.allclose(geometric(P)[0, 0], g / g.sum(), atol=1e-12)
    # a token one teacher rules out gets zero
    g2 = torch.tensor([math.sqrt(0.1), math.sqrt(0.1), 0.0], dtype=torch.float64)
    assert torch.allclose(geometric(P)[1, 0], g2 / g2.sum(), atol=1e-12)


def test_weighted_static_and_from_dev_wer():
    out = weighted(P, [3.0, 1.0])
    assert torch.allclose(out[0, 0], torch.tensor([0.55, 0.3, 0.15], dtype=torch.float64))
    w = weights_from_dev_wer([10.0, 20.0], temperature=10.0)
    e = math.exp(-1.0)
    assert torch.allclose(w, torch.tensor([1 / (1 + e), e / (1 + e)], dtype=torch.float64))
    with pytest.raises(ValueError, match="non-negative"):
        weighted(P, [-1.0, 1.0])


def test_best_picks_the_lowest_error_teacher_per_utterance():
    errors = torch.tensor([[12.0, 30.0], [40.0, 8.0]])
    out = best(P, errors)
    assert torch.equal(out[0], P[0, 0]) and torch.equal(out[1], P[1, 1])
    tied = torch.tensor([[10.0, 10.0], [10.0, 10.0]])
    cer = torch.tensor([[5.0, 2.0], [1.0, 3.0]])
    out = best(P, tied, tie_break=cer)
    assert torch.equal(out[0], P[0, 1]) and torch.equal(out[1], P[1, 0])
    assert torch.equal(best(P, tied)[0], P[0, 0])  # full tie: first teacher
    with pytest.raises(ValueError, match="needs each teacher's error"):
        best(P, torch.tensor([[1.0, float("nan")], [1.0, 2.0]]))


def test_confidence_weights_by_negative_entropy():
    out = confidence(P, sharpness=1.0)
    h = [-sum(p * math.log(p) for p in row if p > 0) for row in ([0.7, 0.2, 0.1], [0.1, 0.6, 0.3])]
    w = torch.softmax(-torch.tensor(h, dtype=torch.float64), 0)
    expected = w[0] * P[0, 0, 0] + w[1] * P[0, 1, 0]
    assert torch.allclose(out[0, 0], expected, atol=1e-12)
    # sharpness 0 -> plain average
    assert torch.allclose(confidence(P, sharpness=0.0), average(P))


def test_every_strategy_returns_a_distribution_and_registry_by_name():
    options = {
        "weighted": {"weights": [1.0, 2.0]},
        "best": {"errors": torch.tensor([[1.0, 2.0], [2.0, 1.0]])},
    }
    for name in STRATEGIES:
        out = combine(name, P, **options.get(name, {}))
        assert out.shape == (2, 1, 3)
        assert torch.allclose(out.sum(-1), torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown ensemble strategy 'median'"):
        combine("median", P)
