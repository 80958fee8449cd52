"""Inventory mapping by symbol and frame-shift pooling."""

import pytest
import torch

from speechkd.distill.align import (
    InventoryMap,
    build_inventory_maps,
    frame_ratio,
    match_length,
    pool_frames,
)


def test_mapping_by_symbol_reorders_and_collects_oov_mass():
    teacher = ["<blank>", " ", "a", "b", "ß"]
    student = ["<blank>", "b", "a", "<space>"]
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25]], dtype=torch.float64)
    mapped = InventoryMap(teacher, student, mode="rest").apply(probs)
    assert torch.allclose(mapped, torch.tensor([[0.1, 0.15, 0.3, 0.2, 0.25]], dtype=torch.float64))
    renorm = InventoryMap(teacher, student, mode="renormalize").apply(probs)
    assert torch.allclose(
        renorm, torch.tensor([[0.1, 0.15, 0.3, 0.2, 0.0]], dtype=torch.float64) / 0.75
    )
    assert InventoryMap(teacher, student).missing_in_student == ["ß"]


def test_student_token_no_teacher_has_is_refused_by_name():
    with pytest.raises(ValueError, match=r"\['é'\].*no teacher"):
        build_inventory_maps(
            [["<blank>", "a"], ["<blank>", "b"]],
            ["<blank>", "a", "b", "é"],
            teacher_names=["x", "y"],
        )
    maps = build_inventory_maps([["<blank>", "a"], ["<blank>", "b"]], ["<blank>", "a", "b"])
    assert [m.has_oov for m in maps] == [False, False]
    with pytest.raises(ValueError, match="unknown inventory mapping mode"):
        InventoryMap(["a"], ["a"], mode="drop")


def test_frame_ratio_accepts_equal_or_integer_finer_teacher_only():
    assert frame_ratio(10, 10) == 1
    assert frame_ratio(10, 40) == 4
    with pytest.raises(
        ValueError, match=r"teacher 'big' frame shift 40 ms and student frame shift 10 ms"
    ):
        frame_ratio(40, 10, "big")
    with pytest.raises(ValueError, match=r"frame shift 20 ms and student frame shift 30 ms"):
        frame_ratio(20, 30)


def test_pool_frames_averages_probabilities_with_ragged_tail():
    probs = torch.arange(2 * 7 * 2, dtype=torch.float64).view(2, 7, 2)
    pooled, frames = pool_frames(probs, torch.tensor([7, 4]), 3)
    assert frames.tolist() == [3, 2]
    assert torch.allclose(pooled[0, 0], probs[0, 0:3].mean(0))
    assert torch.allclose(pooled[0, 2], probs[0, 6])  # tail of one frame
    assert torch.allclose(
        pooled[1, 1], probs[1, 3]
    )  # second utterance: frame 3 alone, padding ignored
    same, same_frames = pool_frames(probs, torch.tensor([7, 4]), 1)
    assert same is probs and same_frames.tolist() == [7, 4]


def test_match_length_pads_or_trims_one_frame_and_refuses_more():
    probs = torch.arange(6, dtype=torch.float64).view(1, 6, 1).repeat(2, 1, 1)
    out = match_length(probs, torch.tensor([5, 6]), torch.tensor([6, 5]), 7)
    assert out[0, :, 0].tolist() == [0, 1, 2, 3, 4, 4, 4]  # padded by repeating the last frame
    assert out[1, :, 0].tolist() == [0, 1, 2, 3, 4, 4, 4]  # trimmed to 5, then padding
    with pytest.raises(ValueError, match="teacher 't' has 3 frames .* student has 6"):
        match_length(probs, torch.tensor([3, 6]), torch.tensor([6, 6]), 6, teacher_name="t")
