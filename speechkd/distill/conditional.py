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
    labels = targets.long().cpu()
    n_labels = target_lens.long().cpu()
    n_states = 2 * max(int(labels.shape[1]), 1) + 1
    ext = torch.full((batch, n_states), blank, dtype=torch.long)
    ext[:, 1 : 2 * labels.shape[1] : 2] = labels
    emit = log_probs.detach().double().cpu().gather(2, ext[:, None, :].expand(batch, time, n_states))
    skip = torch.zeros(batch, n_states, dtype=torch.bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    neg = torch.tensor(float("-inf"), dtype=torch.float64)
    scores = torch.full((batch, time, n_states), float("-inf"), dtype=torch.float64)
    scores[:, 0, :2] = emit[:, 0, :2]
    back = torch.zeros(batch, time, n_states, dtype=torch.long)
    for t in range(1, time):
        delta = scores[:, t - 1]
        step = torch.cat([delta.new_full((batch, 1), neg), delta[:, :-1]], 1)
        jump = torch.cat([delta.new_full((batch, 2), neg), delta[:, :-2]], 1)
        best, back[:, t] = torch.stack([delta, step, torch.where(skip, jump, neg)], 0).max(0)
        scores[:, t] = best + emit[:, t]
    alignment = torch.full((batch, time), -1, dtype=torch.long)
    for b in range(batch):
        n_frames, n_lab = int(frames[b]), int(n_labels[b])
        if n_frames <= 0:
            continue
        last = scores[b, n_frames - 1]
        end = max({2 * n_lab, max(2 * n_lab - 1, 0)}, key=lambda s: float(last[s]))
        if not torch.isfinite(last[end]):
            continue
        state = end
        for t in range(n_frames - 1, -1, -1):
            alignment[b, t] = ext[b, state]
            state -= int(back[b, t, state])
    return alignment.to(log_probs.device)


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
