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


def test_coarser_teacher_frames_are_repeated_and_keep_its_greedy_transcript():
    """An 80 ms teacher against a 20 ms student: each frame repeated 4 times, the doubled letter kept."""
    from distill_helpers import teachers_like

    from speechkd.decoding import ctc_greedy
    from speechkd.distill.align import frame_factors
    from speechkd.distill.losses import teacher_batch_from_log_probs
    from speechkd.distill.target import TeacherTarget

    assert frame_factors(80, 20) == (1, 4) and frame_factors(10, 40) == (4, 1) and frame_factors(20, 20) == (1, 1)
    with pytest.raises(ValueError, match="not compatible"):
        frame_factors(30, 20)
    symbols = ["<blank>", " ", "a", "l"]
    path = [2, 3, 0, 3, 1, 2]  # "al", blank, "l", " ", "a": greedy "all a"
    probs = torch.full((1, len(path), 4), 0.02)
    probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.94
    teacher = teacher_batch_from_log_probs([probs.log()], [torch.tensor([len(path)])], k=0)
    target = TeacherTarget(teachers_like(symbols, shifts=(80,)), symbols, 20)
    assert target.factors == [1] and target.repeats == [4]
    frames = target.pooled_frames(teacher)
    assert frames.tolist() == [24]
    q = target(teacher, frames, 24)[..., :4]
    assert torch.allclose(q[0, 4:8], probs[0, 1].expand(4, 4), atol=1e-3)  # frame 1 four times
    decoded = ctc_greedy(q.log(), frames, 0)[0]
    assert decoded == [2, 3, 3, 1, 2]  # a l l ␣ a: the blank between the two l's survives


def test_student_unk_takes_the_mass_of_teacher_symbols_it_lacks():
    """Hand-built pair: é, ß and the teacher's own <unk> all land on the student's <unk>, nothing in OOV."""
    teacher = ["<blank>", " ", "a", "é", "ß", "<unk>", "b"]
    student = ["<blank>", "a", "<space>", "<unk>"]
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.05, 0.15, 0.12, 0.08]], dtype=torch.float64)
    for mode in ("rest", "renormalize"):
        inv_map = InventoryMap(teacher, student, mode=mode)
        assert inv_map.missing_in_student == ["é", "ß", "b"] and not inv_map.has_oov
        assert inv_map.to_unk == ["é", "ß", "<unk>", "b"]
        mapped = inv_map.apply(probs)
        expected = torch.tensor([[0.1, 0.3, 0.2, 0.05 + 0.15 + 0.12 + 0.08, 0.0]], dtype=torch.float64)
        assert torch.allclose(mapped, expected)
        # in the log domain: the log-sum-exp of the folded symbols' log-probabilities
        assert torch.allclose(mapped[0, 3].log(), torch.logsumexp(probs.log()[0, [3, 4, 5, 6]], 0))
    # a student <unk> is covered by any teacher symbol the student lacks; without one it is not
    build_inventory_maps([teacher], student)
    with pytest.raises(ValueError, match=r"\['<unk>'\].*no teacher"):
        build_inventory_maps([["<blank>", " ", "a"]], student)
