"""Bring teacher posteriors onto the student's token inventory and frame rate.

Two independent steps, applied per teacher before the ensemble is formed:

* **Inventory mapping** (:class:`InventoryMap`): teachers and the student name
  their tokens by symbol; a teacher probability vector over its own inventory
  becomes a vector over the student inventory plus one extra column, the
  *out-of-inventory* (OOV) column, holding teacher mass on symbols the student
  does not have. A student with ``<unk>`` takes that mass (and the mass on
  the teacher's own ``<unk>``) on its ``<unk>`` instead: summed probabilities,
  the log-sum-exp of their log-probabilities.
* **Frame-shift pooling** (:func:`pool_frames`, :func:`match_length`): a
  teacher whose frame shift is an integer factor finer than the student's is
  averaged (in the probability domain) down to the student's rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from speechkd.text import UNK

OOV_MODES = ("rest", "renormalize")


def _display(symbol: str) -> str:
    return "<space>" if symbol == " " else symbol


class InventoryMap:
    """Map one teacher's token distribution onto the student inventory by symbol.

    Parameters
    ----------
    teacher_symbols : sequence of str
        The teacher's tokens, index order (index 0 is its blank).
    student_symbols : sequence of str
        The student's tokens, index order.
    mode : {"rest", "renormalize"}
        What happens to teacher mass on symbols the student lacks, when the
        student has no ``<unk>`` (with one, that mass goes to it). ``"rest"``
        keeps it in the OOV column, which the KD loss folds into the "rest"
        bucket (so the student is asked to put that mass on tokens outside the
        ensemble's top-k). ``"renormalize"`` drops it and rescales the mapped
        probabilities to sum to one; the OOV column is then zero.
    teacher_name : str
        Used in error messages.

    Attributes
    ----------
    missing_in_student : list of str
        Teacher symbols the student lacks.
    to_unk : list of str
        Those of them (and the teacher's own ``<unk>``) whose mass goes to
        the student's ``<unk>``; empty when the student has none.
    has_oov : bool
        Whether some teacher mass lands in the OOV column.

    Notes
    -----
    ``" "`` and ``"<space>"`` name the same symbol.
    """

    def __init__(
        self,
        teacher_symbols: Sequence[str],
        student_symbols: Sequence[str],
        mode: str = "rest",
        teacher_name: str = "teacher",
    ):
        if mode not in OOV_MODES:
            raise ValueError(
                f"unknown inventory mapping mode {mode!r}; expected one of {OOV_MODES}"
            )
        self.mode = mode
        self.teacher_name = teacher_name
        self.teacher_size = len(teacher_symbols)
        self.student_size = len(student_symbols)
        student_index = {_display(s): i for i, s in enumerate(student_symbols)}
        self.missing_in_student = [
            _display(s) for s in teacher_symbols if _display(s) not in student_index
        ]
        subwords = [s for s in self.missing_in_student if len(s) > 1 and not s.startswith("<")]
        if subwords:
            raise ValueError(
                f"teacher '{teacher_name}' has subword tokens the student lacks (e.g. {subwords[:3]}): its "
                "frame posteriors cannot be mapped onto the student's characters frame by frame. Use it as "
                "a transcript teacher (speechkd.distill.transcripts.GreedyTranscripts: its transcripts "
                "become pseudo-labels), or give the student the teacher's tokens"
            )
        fallback = student_index.get(UNK, self.student_size)  # the student's <unk>, else the OOV column
        target = [student_index.get(_display(s), fallback) for s in teacher_symbols]
        self.target_index = torch.tensor(target, dtype=torch.long)
        self.to_unk = ([_display(s) for s, j in zip(teacher_symbols, target) if j == fallback]
                       if UNK in student_index else [])
        self.has_oov = self.student_size in target
        self._matrix_cache: dict[tuple, torch.Tensor] = {}

    def _matrix(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self._matrix_cache:
            matrix = torch.zeros(self.teacher_size, self.student_size + 1, dtype=dtype)
            matrix[torch.arange(self.teacher_size), self.target_index] = 1.0
            self._matrix_cache[key] = matrix.to(device)
        return self._matrix_cache[key]

    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        """Map teacher probabilities to the student inventory.

        Parameters
        ----------
        probs : torch.Tensor
            ``(..., V_teacher)`` probabilities.

        Returns
        -------
        torch.Tensor
            ``(..., V_student + 1)``; the last column is the OOV mass (zero in
            ``"renormalize"`` mode, where the rest is rescaled to sum to one, or
            made uniform when the teacher put all its mass on missing symbols).
        """
        if probs.shape[-1] != self.teacher_size:
            raise ValueError(
                f"teacher '{self.teacher_name}' posteriors have {probs.shape[-1]} tokens "
                f"but its inventory has {self.teacher_size}"
            )
        mapped = probs @ self._matrix(probs.dtype, probs.device)
        if self.mode == "renormalize" and self.has_oov:
            mapped = mapped.clone()
            mapped[..., -1] = 0.0
            total = mapped.sum(-1, keepdim=True)
            # a frame with all its mass outside the student's inventory says nothing about the
            # student's tokens: uniform over them (a target that sums to one keeps the KL >= 0)
            uniform = torch.full_like(mapped, 1.0 / self.student_size)
            uniform[..., -1] = 0.0
            mapped = torch.where(total > 0, mapped / total.clamp_min(torch.finfo(mapped.dtype).tiny), uniform)
        return mapped


def build_inventory_maps(
    teacher_symbols: Sequence[Sequence[str]],
    student_symbols: Sequence[str],
    mode: str = "rest",
    teacher_names: Sequence[str] | None = None,
) -> list[InventoryMap]:
    """One :class:`InventoryMap` per teacher, after checking the student is covered.

    Raises
    ------
    ValueError
        If a student token gets mass from no teacher (the KD target could
        never put mass on it), naming the token(s). The student's ``<unk>``
        is covered by any teacher symbol the student lacks.
    """
    names = (
        list(teacher_names)
        if teacher_names is not None
        else [f"teacher{i}" for i in range(len(teacher_symbols))]
    )
    maps = [
        InventoryMap(symbols, student_symbols, mode=mode, teacher_name=name)
        for symbols, name in zip(teacher_symbols, names)
    ]
    covered = {int(j) for inv_map in maps for j in inv_map.target_index}
    uncovered = [_display(s) for i, s in enumerate(student_symbols) if i not in covered]
    if uncovered:
        raise ValueError(
            f"student token(s) {uncovered} appear in no teacher's inventory "
            f"(teachers: {names}); remove them from the student inventory or add a teacher that has them"
        )
    return maps


def frame_ratio(
    teacher_shift_ms: float, student_shift_ms: float, teacher_name: str = "teacher"
) -> int:
    """Integer pooling factor ``student_shift / teacher_shift``.

    Raises
    ------
    ValueError
        Unless the shifts are equal or the teacher is finer by an integer factor
        (a coarser teacher, or a non-integer ratio, is refused), naming both shifts.
    """
    ratio = student_shift_ms / teacher_shift_ms
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > 1e-9:
        raise ValueError(
            f"teacher '{teacher_name}' frame shift {teacher_shift_ms} ms and student frame shift "
            f"{student_shift_ms} ms are not compatible: the student's shift must equal the teacher's "
            f"or be an integer multiple of it"
        )
    return int(factor)


def frame_factors(
    teacher_shift_ms: float, student_shift_ms: float, teacher_name: str = "teacher"
) -> tuple[int, int]:
    """``(pool, repeat)``: how one teacher's frames reach the student's rate.

    A teacher finer than the student by an integer factor is pooled
    (``pool`` = factor, :func:`pool_frames`); one coarser by an integer factor
    has each frame repeated (``repeat`` = factor, :func:`repeat_frames`). Any
    other pair is refused (:func:`frame_ratio`'s message).

    Repeating is the rule for a coarser teacher because it keeps what CTC
    reads: a token spike repeated collapses back to one token, and a doubled
    letter keeps the blank between its two spikes, so greedy decoding of the
    repeated target gives the teacher's own transcript.
    """
    if teacher_shift_ms > student_shift_ms:
        return 1, frame_ratio(student_shift_ms, teacher_shift_ms, teacher_name)
    return frame_ratio(teacher_shift_ms, student_shift_ms, teacher_name), 1


def repeat_frames(
    probs: torch.Tensor, frames: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat every frame ``factor`` times (a teacher coarser than the student).

    Parameters
    ----------
    probs : torch.Tensor
        ``(batch, time, dim)`` probabilities at the teacher's rate.
    frames : torch.Tensor
        ``(batch,)`` valid frames.
    factor : int

    Returns
    -------
    repeated : torch.Tensor
        ``(batch, time * factor, dim)``.
    repeated_frames : torch.Tensor
        ``(batch,)`` = ``frames * factor``.
    """
    frames = frames.to(probs.device).long()
    if factor == 1:
        return probs, frames
    return probs.repeat_interleave(factor, dim=1), frames * factor


def pool_frames(
    probs: torch.Tensor, frames: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average probabilities over groups of ``factor`` consecutive frames.

    Parameters
    ----------
    probs : torch.Tensor
        ``(batch, time, dim)`` probabilities at the teacher's rate.
    frames : torch.Tensor
        ``(batch,)`` number of valid (non-padded) frames per utterance.
    factor : int
        Frames per group.

    Returns
    -------
    pooled : torch.Tensor
        ``(batch, ceil(time / factor), dim)``; group ``g`` is the mean of
        teacher frames ``g*factor .. g*factor+factor-1`` that are valid. The
        ragged tail group averages only the frames it has. Groups with no
        valid frame are zero.
    pooled_frames : torch.Tensor
        ``(batch,)`` = ``ceil(frames / factor)``.
    """
    frames = frames.to(probs.device).long()
    if factor == 1:
        return probs, frames
    batch, time, dim = probs.shape
    groups = -(-time // factor)
    padded = torch.nn.functional.pad(probs, (0, 0, 0, groups * factor - time))
    valid = torch.arange(groups * factor, device=probs.device)[None, :] < frames[:, None]
    padded = torch.where(
        valid[..., None], padded, torch.zeros((), dtype=probs.dtype, device=probs.device)
    )
    sums = padded.view(batch, groups, factor, dim).sum(2)
    counts = valid.view(batch, groups, factor).sum(2).clamp_min(1).to(probs.dtype)
    return sums / counts[..., None], -(-frames // factor)


def match_length(
    probs: torch.Tensor,
    frames: torch.Tensor,
    target_frames: torch.Tensor,
    target_time: int,
    tolerance: int = 1,
    teacher_name: str = "teacher",
) -> torch.Tensor:
    """Make teacher frames line up one-to-one with the student's output frames.

    The student's frame count can differ from ``ceil(teacher_frames / factor)``
    by a frame because of convolution padding or subsampling rounding. Up to
    ``tolerance`` frames of difference are absorbed: missing frames at the end
    repeat the teacher's last valid frame, surplus teacher frames at the end are
    dropped. Frames past ``target_frames`` (student padding) also repeat the last
    valid frame so they hold a valid distribution; the loss masks them.

    Parameters
    ----------
    probs : torch.Tensor
        ``(batch, time, dim)`` teacher probabilities at the student's rate.
    frames : torch.Tensor
        ``(batch,)`` valid teacher frames (at the student's rate).
    target_frames : torch.Tensor
        ``(batch,)`` valid student frames.
    target_time : int
        Padded student time dimension of the output.

    Returns
    -------
    torch.Tensor
        ``(batch, target_time, dim)``.

    Raises
    ------
    ValueError
        If an utterance's frame counts differ by more than ``tolerance``.
    """
    frames = frames.to(probs.device).long()
    target_frames = target_frames.to(probs.device).long()
    gap = (frames - target_frames).abs()
    if bool((gap > tolerance).any()):
        b = int(gap.argmax())
        raise ValueError(
            f"teacher '{teacher_name}' has {int(frames[b])} frames at the student's rate but the student "
            f"has {int(target_frames[b])} for batch item {b} (more than {tolerance} apart): check the "
            f"frame shifts and that the cache was built from the same audio"
        )
    last = (torch.minimum(frames, target_frames) - 1).clamp_min(0)
    steps = torch.arange(target_time, device=probs.device)[None, :]
    index = torch.minimum(steps, last[:, None])
    return torch.gather(probs, 1, index[..., None].expand(-1, -1, probs.shape[-1]))
