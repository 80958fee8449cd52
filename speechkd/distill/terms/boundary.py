r"""Decision-boundary transfer: the student matches the teachers on inputs pushed toward their boundary.

Heo et al. 2019 (boundary-supporting samples) move a training input by
small adversarial steps toward the teacher's decision boundary between its
predicted class and the runner-up, and train the student to agree with the
teacher there, where a plain sample says little about the boundary. The
speech equivalent here works per frame, since a CTC model decides once per
output frame: the margin between each valid frame's top two teacher
log-probabilities,

    m(x) = Σ_teachers Σ_{u,t valid} (log p_1 − log p_2)(x),

is lowered by ``steps`` normalized-gradient steps on the waveform,

    x ← x − ε · rms(x_u) · ∇m / rms(∇m)_u      (per utterance u),

and on the moved input x̃ the student matches the teachers' posteriors by
the same top-k KL as :class:`~speechkd.distill.objectives.PosteriorKL`
(the same target: fusion, inventory map, pooling, delay). ``stats`` gives
``boundary_flips``, the share of valid teacher frames whose top-1 token
changed (how far the step went: near zero means ε is too small to reach the
boundary, near one means it crossed it everywhere).

It needs the teachers in the training step (a gradient through them) and
costs one teacher forward and backward per step plus one teacher and one
student forward on x̃.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from speechkd.distill.objectives import ObjectiveBatch, ObjectiveTerm, PosteriorKL
from speechkd.models.features import relative_lengths_to_absolute


def utterance_rms(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(batch, 1)`` root mean square of ``(batch, samples)`` over the valid samples."""
    weight = valid.to(x.dtype)
    return ((x.pow(2) * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1.0)).sqrt()


class BoundarySupportKL(ObjectiveTerm):
    """Posterior KL on boundary-supporting inputs (see the module doc).

    Parameters
    ----------
    epsilon : float
        Step size relative to each utterance's RMS level (0.01 = 40 dB below it).
    steps : int
        Gradient steps toward the boundary.
    temperature : float
        Of the KL on the moved input.
    """

    needs_teacher = True
    needs_inputs = True

    def __init__(self, epsilon: float = 0.01, steps: int = 1, temperature: float = 1.0):
        super().__init__()
        if epsilon <= 0 or steps < 1:
            raise ValueError(f"epsilon must be > 0 and steps >= 1, got {epsilon} and {steps}")
        self.epsilon, self.steps = float(epsilon), int(steps)
        self.kl = PosteriorKL(temperature)
        self.stats = {}

    @staticmethod
    def teacher_margins(teachers, wavs: torch.Tensor, wav_lens: torch.Tensor) -> list:
        """Per teacher, ``((batch, frames) top-1 − top-2 log-prob margin, (batch, frames) valid, top-1 ids)``."""
        margins = []
        for teacher in teachers.teachers:
            log_probs, frames = teacher.forward_log_probs(teacher.prepare_input(wavs, wav_lens), wav_lens)
            top = log_probs.topk(2, dim=-1)
            valid = torch.arange(log_probs.shape[1], device=wavs.device)[None, :] < frames.to(wavs.device)[:, None]
            margins.append((top.values[..., 0] - top.values[..., 1], valid, top.indices[..., 0]))
        return margins

    def boundary_inputs(self, teachers, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``(x̃ (batch, samples), share of valid teacher frames whose top-1 changed)``."""
        samples = relative_lengths_to_absolute(wav_lens, wavs.shape[1])
        valid = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < samples[:, None]
        scale = self.epsilon * utterance_rms(wavs, valid)
        moved = wavs.detach()
        with torch.enable_grad():
            for step in range(self.steps):
                moved = moved.clone().requires_grad_(True)
                margins = self.teacher_margins(teachers, moved, wav_lens)
                if step == 0:
                    before = [ids for _, _, ids in margins]
                total = sum((m * v).sum() for m, v, _ in margins)
                grad, = torch.autograd.grad(total, moved)
                direction = grad / utterance_rms(grad, valid).clamp_min(1e-12)
                moved = (moved - scale * direction * valid).detach()
        with torch.no_grad():
            after = self.teacher_margins(teachers, moved, wav_lens)
        flipped = sum(((ids != old) & v).sum() for (_, v, ids), old in zip(after, before))
        counted = sum(v.sum() for _, v, _ in after)
        return moved, float(flipped) / max(float(counted), 1.0)

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        if batch.inputs is None or batch.model is None or not hasattr(batch.teachers, "teachers"):
            raise ValueError("the boundary term needs online teachers (a TeacherEnsemble), the batch's inputs "
                             "and the student model: run the recipe with online teachers")
        wavs, wav_lens = batch.inputs
        moved, flips = self.boundary_inputs(batch.teachers, wavs, wav_lens)
        source = SimpleNamespace(**{batch.teachers.signal: (moved, wav_lens)})
        teacher = batch.teachers.teacher_batch(source, batch.device)
        log_probs = batch.model(moved, wav_lens)
        value = self.kl(ObjectiveBatch(log_probs, wav_lens, teacher=teacher, target=batch.target))
        self.stats = {"boundary_flips": flips}
        return value
