"""Conditional T/S: forced alignment, frame/utterance selection, and the adaptation objective."""

import itertools
import math

import pytest
import torch
from distill_helpers import teachers_like

from speechkd.distill.conditional import (
    conditional_targets,
    ctc_forced_alignment,
    greedy_matches_reference,
)
from speechkd.distill.losses import teacher_batch_from_log_probs
from speechkd.distill.objectives import CTCTerm, Objective, ObjectiveBatch, PosteriorKL
from speechkd.distill.target import TeacherTarget

SYMBOLS = ["<blank>", " ", "a", "b"]
BLANK, A, B = 0, 2, 3


def peaked(labels, vocab=4, peak=0.9):
    """``(time, vocab)`` probabilities putting ``peak`` on each frame's label."""
    probs = torch.full((len(labels), vocab), (1 - peak) / (vocab - 1), dtype=torch.float64)
    probs[torch.arange(len(labels)), torch.tensor(labels)] = peak
    return probs


def test_forced_alignment_follows_the_teacher_and_the_reference():
    # the teacher says "a" at frame 1 and "b" at frame 4; the reference is "a b"
    probs = peaked([BLANK, A, BLANK, BLANK, B, BLANK])
    alignment = ctc_forced_alignment(probs.log()[None], torch.tensor([6]),
                                     torch.tensor([[A, B]]), torch.tensor([2]))
    assert alignment.tolist() == [[BLANK, A, BLANK, BLANK, B, BLANK]]
    # the reference "a a" needs a blank between the two a's; padding frames get -1
    probs = peaked([A, A, A, BLANK])
    alignment = ctc_forced_alignment(probs.log()[None], torch.tensor([3]),
                                     torch.tensor([[A, A]]), torch.tensor([2]))
    assert alignment[0, 3] == -1
    assert alignment[0, :3].tolist() == [A, BLANK, A]
    # too short for its label: no path, every frame -1
    alignment = ctc_forced_alignment(probs.log()[None], torch.tensor([1]),
                                     torch.tensor([[A, A]]), torch.tensor([2]))
    assert alignment.tolist() == [[-1, -1, -1, -1]]


def collapse(path):
    """A CTC frame labelling's tokens: repeats merged, blanks dropped."""
    return [token for index, token in enumerate(path) if token != BLANK and (index == 0 or token != path[index - 1])]


def best_ctc_path_by_enumeration(log_probs, labels):
    """The best score of any frame labelling that CTC-collapses to ``labels`` (every path tried)."""
    time, vocab = log_probs.shape
    best = -math.inf
    for path in itertools.product(range(vocab), repeat=time):
        if collapse(path) == labels:
            best = max(best, sum(float(log_probs[t, token]) for t, token in enumerate(path)))
    return best


def test_forced_alignment_is_the_best_ctc_path_of_every_batch_row():
    # random posteriors, labels with repeats, rows of other lengths and one with no path:
    # the alignment's score is the best of all paths that collapse to the reference
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(4, 6, 4, generator=generator, dtype=torch.float64).log_softmax(-1)
    targets = torch.tensor([[A, A, B], [B, A, 0], [A, 0, 0], [A, B, A]])
    target_lens, frames = torch.tensor([3, 2, 1, 3]), torch.tensor([6, 5, 6, 2])
    alignment = ctc_forced_alignment(log_probs, frames, targets, target_lens, blank=BLANK)
    assert alignment[3].tolist() == [-1] * 6  # 2 frames cannot carry "a b a"
    for row in range(3):
        n_frames, labels = int(frames[row]), targets[row, : int(target_lens[row])].tolist()
        path = alignment[row, :n_frames].tolist()
        assert alignment[row, n_frames:].tolist() == [-1] * (6 - n_frames)
        score = sum(float(log_probs[row, t, token]) for t, token in enumerate(path))
        assert score == pytest.approx(best_ctc_path_by_enumeration(log_probs[row, :n_frames], labels), abs=1e-9)
        assert collapse(path) == labels
    assert alignment.dtype == torch.long


def test_forced_alignment_of_a_reference_longer_than_a_hundred_labels():
    # 140 labels (281 states): the state index outgrows a small integer type on the way back
    labels = [A, B] * 70
    path = [token for label in labels for token in (label, BLANK)]
    alignment = ctc_forced_alignment(peaked(path).log()[None], torch.tensor([len(path)]),
                                     torch.tensor([labels]), torch.tensor([len(labels)]))
    assert alignment[0].tolist() == path


def test_forced_alignment_of_an_empty_reference_and_of_no_frames():
    # an empty reference (padded label columns ignored) is blank on every valid frame; no frames: all -1
    log_probs = peaked([A, B, BLANK, A]).log()[None].expand(2, -1, -1)
    alignment = ctc_forced_alignment(log_probs, torch.tensor([3, 0]), torch.tensor([[A, B], [A, B]]),
                                     torch.tensor([0, 2]))
    assert alignment.tolist() == [[BLANK, BLANK, BLANK, -1], [-1, -1, -1, -1]]


def test_frame_level_selection_on_a_hand_built_case():
    # reference "a b"; the teacher is right on frames 0-3 and says "a" where "b" is aligned (frame 4)
    teacher = peaked([BLANK, A, BLANK, BLANK, A, BLANK])
    teacher = torch.cat([teacher, torch.zeros(6, 1, dtype=torch.float64)], -1)[None]  # + OOV column
    alignment = torch.tensor([[BLANK, A, BLANK, BLANK, B, BLANK]])
    target, from_teacher = conditional_targets(teacher, alignment, torch.tensor([True]), "frame")
    assert from_teacher.tolist() == [[True, True, True, True, False, True]]
    assert target[0, 4].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]  # one-hot "b"
    assert torch.equal(target[0, :4], teacher[0, :4]) and torch.equal(target[0, 5], teacher[0, 5])
    # an unlabelled utterance always follows the teacher
    target, from_teacher = conditional_targets(teacher, alignment, torch.tensor([False]), "frame")
    assert bool(from_teacher.all()) and torch.equal(target, teacher)


def test_utterance_level_selection():
    right = peaked([BLANK, A, BLANK, B])
    wrong = peaked([BLANK, A, BLANK, A])
    probs = torch.stack([right, wrong])
    refs, ref_lens, frames = torch.tensor([[A, B], [A, B]]), torch.tensor([2, 2]), torch.tensor([4, 4])
    matches = greedy_matches_reference(probs, frames, refs, ref_lens)
    assert matches.tolist() == [True, False]
    teacher = torch.cat([probs, torch.zeros(2, 4, 1, dtype=torch.float64)], -1)
    alignment = torch.tensor([[BLANK, A, BLANK, B]] * 2)
    target, from_teacher = conditional_targets(teacher, alignment, torch.tensor([True, True]),
                                               "utterance", matches)
    assert from_teacher.tolist() == [[True] * 4, [False] * 4]
    assert target[1].argmax(-1).tolist() == [BLANK, A, BLANK, B]
    assert torch.equal(target[0], teacher[0])


def adaptation_objective(alpha, logits, lens, teacher, tokens, token_lens, labelled, conditional=None):
    """The domain-adaptation student's objective: α·CTC on labelled rows + (1−α)·(conditional) KD."""
    objective = Objective({"ctc": CTCTerm(), "kd": PosteriorKL(conditional=conditional)},
                          {"ctc": alpha, "kd": 1.0 - alpha})
    target = TeacherTarget(teachers_like([SYMBOLS], [20]), SYMBOLS, 20, k=0)
    return objective(ObjectiveBatch(torch.log_softmax(logits, -1), lens, tokens, token_lens, labelled,
                                    teacher, target))


def test_objective_uses_labels_only_of_labelled_utterances():
    gen = torch.Generator().manual_seed(0)
    teacher_lp = torch.log_softmax(torch.randn(2, 6, 4, generator=gen, dtype=torch.float64) * 2, -1)
    teacher = teacher_batch_from_log_probs([teacher_lp], [torch.tensor([6, 6])], k=0)
    logits = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    lens = torch.tensor([1.0, 1.0], dtype=torch.float64)
    tokens, token_lens = torch.tensor([[A, B], [B, A]]), torch.tensor([1.0, 1.0])
    labelled = torch.tensor([True, False])
    parts = adaptation_objective(0.5, logits, lens, teacher, tokens, token_lens, labelled, "frame")
    changed = adaptation_objective(0.5, logits, lens, teacher, torch.tensor([[A, B], [A, A]]),
                              token_lens, labelled, "frame")
    assert torch.allclose(parts["loss"], changed["loss"])  # row 1's transcript is never read
    # CTC part = the labelled utterance's CTC / label length; KD = plain KD when not conditional
    ctc_one = torch.nn.functional.ctc_loss(torch.log_softmax(logits[:1], -1).transpose(0, 1),
                                           tokens[:1], torch.tensor([6]), torch.tensor([2]),
                                           reduction="sum") / 2
    plain = adaptation_objective(0.5, logits, lens, teacher, tokens, token_lens, labelled)
    assert plain["ctc"].item() == pytest.approx(ctc_one.item(), rel=1e-9)
    reference = adaptation_objective(0.0, logits, lens, teacher, None, None, None)
    assert plain["kd"].item() == pytest.approx(reference["kd"].item(), rel=1e-9)
    assert plain["loss"].item() == pytest.approx(0.5 * ctc_one.item() + 0.5 * reference["kd"].item())
    assert 0.0 <= parts["teacher_frames"] <= 1.0
    assert "teacher_frames" not in plain  # plain T/S: every frame learns from the teacher


def test_conditional_kd_is_cross_entropy_on_wrong_frames():
    # one utterance, the teacher wrong on one of its 4 frames (says a where b is aligned)
    teacher_probs = peaked([BLANK, A, BLANK, A], peak=0.97)
    teacher = teacher_batch_from_log_probs([teacher_probs.log()[None]], [torch.tensor([4])], k=0)
    logits = torch.zeros(1, 4, 4, dtype=torch.float64)  # uniform student: log 1/4 everywhere
    parts = adaptation_objective(0.0, logits, torch.tensor([1.0]), teacher,
                            torch.tensor([[A, B]]), torch.tensor([1.0]), torch.tensor([True]), "frame")
    assert parts["teacher_frames"] == pytest.approx(0.75)
    rounded = torch.softmax(teacher_probs.log().half().double(), -1)  # fp16 round trip
    kl_teacher = (rounded * (rounded.log() + math.log(4))).sum(-1)
    expected = (kl_teacher[:3].sum() + math.log(4)) / 4  # one-hot frame: CE = log 4
    assert parts["kd"].item() == pytest.approx(expected.item(), rel=1e-3)


def test_utterance_level_conditional_kd_on_a_wrong_utterance_is_cross_entropy_everywhere():
    # the teacher's greedy transcript "a a" misses the reference "a b": every frame learns the aligned label
    teacher_probs = peaked([BLANK, A, BLANK, A], peak=0.97)
    teacher = teacher_batch_from_log_probs([teacher_probs.log()[None]], [torch.tensor([4])], k=0)
    logits = torch.zeros(1, 4, 4, dtype=torch.float64)
    parts = adaptation_objective(0.0, logits, torch.tensor([1.0]), teacher,
                            torch.tensor([[A, B]]), torch.tensor([1.0]), torch.tensor([True]), "utterance")
    assert parts["teacher_frames"] == 0.0
    assert parts["kd"].item() == pytest.approx(math.log(4), rel=1e-9)
    # right transcript: the plain teacher target on every frame
    right = adaptation_objective(0.0, logits, torch.tensor([1.0]), teacher,
                            torch.tensor([[A, A]]), torch.tensor([1.0]), torch.tensor([True]), "utterance")
    plain = adaptation_objective(0.0, logits, torch.tensor([1.0]), teacher, None, None, None)
    assert right["teacher_frames"] == 1.0
    assert right["kd"].item() == pytest.approx(plain["kd"].item(), rel=1e-12)


def test_alignment_level_learns_only_the_teacher_s_timing():
    # the teacher is right (its alignment of "a b": a at frame 1, b at frame 3) but unsure: the target
    # is the one-hot alignment on every frame, so KD = cross-entropy on it, whatever its confidence
    teacher_probs = peaked([BLANK, A, BLANK, B], peak=0.6)
    teacher = teacher_batch_from_log_probs([teacher_probs.log()[None]], [torch.tensor([4])], k=0)
    logits = torch.zeros(1, 4, 4, dtype=torch.float64)  # uniform student
    parts = adaptation_objective(0.0, logits, torch.tensor([1.0]), teacher,
                                 torch.tensor([[A, B]]), torch.tensor([1.0]), torch.tensor([True]), "alignment")
    assert parts["teacher_frames"] == 0.0
    assert parts["kd"].item() == pytest.approx(math.log(4), rel=1e-9)
    # a student on the teacher's timing pays less than one a frame late
    on_time = torch.log(peaked([BLANK, A, BLANK, B], peak=0.9))[None]
    late = torch.log(peaked([BLANK, BLANK, A, B], peak=0.9))[None]
    costs = [adaptation_objective(0.0, student, torch.tensor([1.0]), teacher, torch.tensor([[A, B]]),
                                  torch.tensor([1.0]), torch.tensor([True]), "alignment")["kd"].item()
             for student in (on_time, late)]
    assert costs[0] < costs[1]
    # an unlabelled utterance keeps the teacher's posteriors
    with_oov = torch.cat([teacher_probs, torch.zeros(4, 1, dtype=torch.float64)], -1)[None]
    _, from_teacher = conditional_targets(with_oov, torch.tensor([[BLANK, A, BLANK, B]]), torch.tensor([False]),
                                          "alignment")
    assert bool(from_teacher.all())
