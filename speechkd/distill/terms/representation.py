r"""Representation-space terms: the student's intermediate layer mimics a teacher layer.

:class:`HintLoss` (FitNets, Romero et al. 2015): a learned linear projection
of a student layer regresses a teacher layer, frame by frame::

    L = Σ_{u,t valid} ‖W s_{u,t} + b − h_{u,t}‖² / (D_t · Σ_u T_u)

:class:`ActivationEnergy` (attention transfer, Zagoruyko and Komodakis 2017,
on time instead of space): the per-frame activation energy
``a_{u,t} = Σ_d h_{u,t,d}²``, L2-normalized over each utterance's valid frames,
is matched between student and teacher (no projection needed; the layers may
differ in width)::

    L = mean_u ‖a^s_u / ‖a^s_u‖ − a^t_u / ‖a^t_u‖‖²

Teacher layers come from online speechkd teachers
(:meth:`~speechkd.distill.teachers.Teacher.log_probs_and_states`) at the
student's frame rate (:meth:`~speechkd.distill.objectives.ObjectiveBatch.teacher_state`).
Projections of teacher states are not cached: a cache would have to store
``D_t`` floats per frame (or a fixed projection chosen before the student
exists), so these terms need the teachers in the training step.
"""

from __future__ import annotations

import torch

from speechkd.distill.objectives import ObjectiveBatch, ObjectiveTerm


def masked_frame_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``(batch, time)`` ``values`` over the ``valid`` frames (zero, with gradient, when none)."""
    weight = valid.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


class HintLoss(ObjectiveTerm):
    """FitNets hint: ``‖W s_t + b − h_t‖² / D_t`` averaged over valid frames.

    Parameters
    ----------
    student_layer, teacher_layer : str
        Names in the models' :meth:`~speechkd.models.base.AcousticModel.layer_taps`.
    student_dim, teacher_dim : int
        Their widths (the projection is ``Linear(student_dim, teacher_dim)``).
    teacher_index : int
        Which teacher of the ensemble gives the hint.
    """

    needs_teacher = True

    def __init__(self, student_layer: str, teacher_layer: str, student_dim: int, teacher_dim: int,
                 teacher_index: int = 0):
        super().__init__()
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)
        self.teacher_index = teacher_index
        self.projection = torch.nn.Linear(student_dim, teacher_dim)

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        student = batch.student_state(self.student_layers[0])
        teacher = batch.teacher_state(self.teacher_layers[0], self.teacher_index)
        projected = self.projection.to(student.dtype)(student)
        error = (projected - teacher).pow(2).mean(-1)
        return masked_frame_mean(error, batch.valid)


def frame_energy(states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(batch, time)`` per-frame energy ``Σ_d h²``, zero on padding, unit L2 norm per utterance."""
    energy = states.pow(2).sum(-1) * valid.to(states.dtype)
    return energy / energy.norm(dim=1, keepdim=True).clamp_min(1e-12)


class ActivationEnergy(ObjectiveTerm):
    """Attention transfer over time: match the normalized per-frame activation energy.

    Parameters
    ----------
    student_layer, teacher_layer : str
    teacher_index : int
    """

    needs_teacher = True

    def __init__(self, student_layer: str, teacher_layer: str, teacher_index: int = 0):
        super().__init__()
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)
        self.teacher_index = teacher_index

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        student = frame_energy(batch.student_state(self.student_layers[0]), batch.valid)
        teacher = frame_energy(batch.teacher_state(self.teacher_layers[0], self.teacher_index), batch.valid)
        return (student - teacher).pow(2).sum(1).mean()
