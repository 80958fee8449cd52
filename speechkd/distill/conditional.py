r"""Conditional teacher-student learning (Meng et al., ICASSP 2019) for CTC students.

In plain T/S adaptation the student copies the teacher everywhere, also
where the teacher is wrong. Conditional T/S uses the transcript where one
exists: the student learns from the teacher's posteriors where the teacher
is right and from the (one-hot) label where it is wrong.

"Right" is decided on the teacher's own timing. The reference transcript is
force-aligned (CTC Viterbi) to the teacher's frame posteriors
(:func:`ctc_forced_alignment`); at frame ``t`` the teacher is right when its
most probable token equals the aligned label (blank included). Three levels:

- ``frame``: per frame, teacher target where right, one-hot aligned label
  where wrong (Meng et al.'s frame-level selection);
- ``utterance``: per utterance, the teacher's whole target when its greedy
  transcript equals the reference, one-hot aligned labels on every frame
  otherwise;
- ``alignment``: one-hot aligned labels on every labelled frame: the teacher
  gives only the timing of the reference (frame-level cross-entropy on its
  forced alignment), none of its own posteriors. For a guide that is far
  from converged (:mod:`speechkd.pipeline`'s ``teacher_guide: student``),
  whose spike timing is worth learning and its uncertainty is not.

Utterances without a label (the unlabelled part of the target data) always
learn from the teacher. The domain-adaptation student's objective is
:class:`~speechkd.distill.objectives.PosteriorKL` with ``conditional`` set
(these functions build its target) plus a
:class:`~speechkd.distill.objectives.CTCTerm`, which reads the labelled
utterances only::

    L = α · mean_{u labelled} CTC_u / |y_u| + (1 − α) · τ² · mean_t KL(target_t^τ ‖ student_t^τ)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from speechkd.decoding import ctc_greedy

LEVELS = ("frame", "utterance", "alignment")


@torch.no_grad()
def ctc_forced_alignment(
    log_probs: torch.Tensor,
    frames: torch.Tensor,
    targets: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """Most probable CTC path (Viterbi) through each reference, as a label per frame.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(batch, time, vocab)`` log-probabilities (e.g. the teacher's).
    frames : torch.Tensor
        ``(batch,)`` valid frames (absolute, integer).
    targets : torch.Tensor
        ``(batch, label_len)`` token ids, padded anyhow.
    target_lens : torch.Tensor
        ``(batch,)`` absolute label lengths (integer).
    blank : int
        Blank index.

    Returns
    -------
    torch.Tensor
        ``(batch, time)`` long: the token (or blank) each frame emits on the
        best path; ``-1`` on padding frames and on every frame of an
        utterance too short for its label (no CTC path exists).
    """
    batch, time, _ = log_probs.shape
    labels = targets.long().cpu().numpy()
    n_labels = target_lens.long().cpu().tolist()
    n_frames = frames.long().cpu().tolist()
    n_states = 2 * max(labels.shape[1], 1) + 1
    ext = np.full((batch, n_states), blank, dtype=np.int64)  # blank, y1, blank, y2, ..., blank
    ext[:, 1 : 2 * labels.shape[1] : 2] = labels
    emit = np.take_along_axis(log_probs.detach().double().cpu().numpy(),
                              np.broadcast_to(ext[:, None, :], (batch, time, n_states)), axis=2)
    # a label state may be entered from two states back (over a blank) unless it repeats that label
    no_skip = np.ones((batch, n_states), dtype=bool)
    no_skip[:, 2:] = (ext[:, 2:] == blank) | (ext[:, 2:] == ext[:, :-2])
    # Viterbi over the time axis, the states padded with two -inf on the left so that the
    # predecessors of state s (s, s - 1, s - 2) are slices; back[b, t, s]: how many states back
    scores = np.full((batch, time, n_states + 2), -np.inf)
    scores[:, 0, 2:4] = emit[:, 0, :2]
    back = np.zeros((batch, time, n_states), dtype=np.int8)
    for t in range(1, time):
        previous = scores[:, t - 1]
        stay, step = previous[:, 2:], previous[:, 1:-1]
        jump = np.where(no_skip, -np.inf, previous[:, :-2])
        from_step, best = step > stay, np.maximum(stay, step)  # ties go to the fewest states back
        back[:, t] = np.where(jump > best, 2, from_step)
        scores[:, t, 2:] = np.maximum(best, jump) + emit[:, t]
    alignment = np.full((batch, time), -1, dtype=np.int64)
    for b in range(batch):
        if n_frames[b] <= 0:
            continue
        last = scores[b, n_frames[b] - 1, 2:]
        ends = [2 * n_labels[b] - 1, 2 * n_labels[b]] if n_labels[b] else [0]  # on the last label or after it
        state = max(ends, key=lambda s: last[s])
        if not np.isfinite(last[state]):
            continue
        for t in range(n_frames[b] - 1, -1, -1):
            alignment[b, t] = ext[b, state]
            state -= int(back[b, t, state])  # a NumPy int8 would make the state int8 (NEP 50)
    return torch.from_numpy(alignment).to(log_probs.device)


def greedy_matches_reference(
    teacher_probs: torch.Tensor,
    frames: torch.Tensor,
    targets: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """Whether the teacher's greedy CTC transcript equals the reference, per utterance.

    Parameters
    ----------
    teacher_probs : torch.Tensor
        ``(batch, time, vocab)`` (extra columns beyond the student vocabulary
        must already be dropped).
    frames, target_lens : torch.Tensor
        ``(batch,)`` absolute valid frames and label lengths.
    targets : torch.Tensor
        ``(batch, label_len)``.

    Returns
    -------
    torch.Tensor
        ``(batch,)`` bool.
    """
    hyps = ctc_greedy(teacher_probs, frames, blank)
    matches = [hyp == targets[b, : int(target_lens[b])].long().cpu().tolist() for b, hyp in enumerate(hyps)]
    return torch.tensor(matches, dtype=torch.bool, device=teacher_probs.device)


def conditional_targets(
    teacher_target: torch.Tensor,
    alignment: torch.Tensor,
    labelled: torch.Tensor,
    level: str = "frame",
    utterance_right: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the teacher's target by the one-hot label where the teacher is wrong.

    Parameters
    ----------
    teacher_target : torch.Tensor
        ``(batch, time, V + 1)`` teacher distribution at the student's rate
        and inventory (last column: out-of-inventory mass), as
        :class:`~speechkd.distill.target.TeacherTarget` gives it.
    alignment : torch.Tensor
        ``(batch, time)`` aligned label per frame (:func:`ctc_forced_alignment`),
        ``-1`` where there is none.
    labelled : torch.Tensor
        ``(batch,)`` bool: which utterances have a usable transcript.
    level : {"frame", "utterance", "alignment"}
    utterance_right : torch.Tensor, optional
        ``(batch,)`` bool, required for ``level="utterance"``
        (:func:`greedy_matches_reference`).

    Returns
    -------
    target : torch.Tensor
        ``(batch, time, V + 1)``: the teacher's rows where it is followed,
        one-hot rows of the aligned label elsewhere.
    from_teacher : torch.Tensor
        ``(batch, time)`` bool, True where the teacher's row was kept.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown conditional T/S level {level!r}; choose one of {LEVELS}")
    vocab = teacher_target.shape[-1] - 1
    aligned = alignment >= 0
    usable = labelled[:, None] & aligned
    if level == "frame":
        wrong = teacher_target[..., :vocab].argmax(-1) != alignment
    elif level == "alignment":
        wrong = torch.ones_like(aligned)
    else:
        if utterance_right is None:
            raise ValueError("level='utterance' needs utterance_right")
        wrong = (~utterance_right)[:, None].expand_as(alignment)
    use_label = usable & wrong
    one_hot = F.one_hot(alignment.clamp_min(0), vocab + 1).to(teacher_target.dtype)
    target = torch.where(use_label[..., None], one_hot, teacher_target)
    return target, ~use_label
