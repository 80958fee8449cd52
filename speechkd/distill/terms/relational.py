r"""Relations between samples: relational KD (Park et al. 2019) and similarity-preserving KD (Tung and Mori 2019).

Both compare how the embeddings of a batch relate to each other, not the
embeddings themselves, so student and teacher may differ in width. Embeddings
are one per utterance (the masked time-mean of a layer) or one per frame (the
batch's valid frames at the student's rate, at most ``max_frames`` of them,
evenly spaced). A layer is a name in the models'
:meth:`~speechkd.models.base.AcousticModel.layer_taps`, or ``posteriors``:
the student's output distribution, and on the teacher side the fused teacher
target, which a posterior cache provides (no online teacher needed).

RKD-D: pairwise distances, each normalized by its batch mean, matched with a
Huber loss; RKD-A: the cosines of the angles of every triplet, matched with a
Huber loss. SP: the row-L2-normalized Gram matrices ``G = A Aᵀ`` matched in
squared Frobenius norm over ``b²``. All three are invariant to a uniform
scaling of either side's embeddings, as their definitions say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechkd.distill.objectives import ObjectiveBatch, ObjectiveTerm

LEVELS = ("utterance", "frame")


def batch_embeddings(states: torch.Tensor, valid: torch.Tensor, level: str, max_frames: int = 64) -> torch.Tensor:
    """``(n, dim)`` embeddings of a batch's ``(batch, time, dim)`` states.

    ``utterance``: the mean over each utterance's valid frames (n = batch);
    ``frame``: up to ``max_frames`` valid frames, evenly spaced over the batch.
    """
    if level == "utterance":
        weight = valid.to(states.dtype)[..., None]
        return (states * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    frames = states[valid]
    if frames.shape[0] > max_frames:
        frames = frames[torch.linspace(0, frames.shape[0] - 1, max_frames, device=frames.device).long()]
    return frames


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` Euclidean distances divided by their mean over pairs ``i ≠ j``."""
    diff = embeddings[:, None, :] - embeddings[None, :, :]
    dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt() * (1 - torch.eye(len(embeddings), device=embeddings.device,
                                                                          dtype=embeddings.dtype))
    n = len(embeddings)
    return dist / (dist.sum() / (n * (n - 1))).clamp_min(1e-12)


def triplet_angles(embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, n, n)`` cosines ``⟨(e_i − e_j)/‖·‖, (e_k − e_j)/‖·‖⟩`` of the angle at ``j``."""
    diff = F.normalize(embeddings[:, None, :] - embeddings[None, :, :], p=2, dim=-1)  # [i, j] = e_i - e_j
    return torch.einsum("ijd,kjd->ijk", diff, diff)


def similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` Gram matrix with L2-normalized rows (Tung and Mori's ``G̃``)."""
    return F.normalize(embeddings @ embeddings.T, p=2, dim=1)


class _BatchRelation(ObjectiveTerm):
    """Shared plumbing: which layers, which level, the two sides' embeddings."""

    def __init__(self, student_layer: str, teacher_layer: str = "posteriors", level: str = "utterance",
                 max_frames: int = 64, teacher_index: int = 0):
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)
        self.level, self.max_frames, self.teacher_index = level, int(max_frames), teacher_index
        self.needs_teacher = True

    def embeddings(self, batch: ObjectiveBatch) -> tuple[torch.Tensor, torch.Tensor]:
        student = batch.student_state(self.student_layers[0])
        teacher = batch.teacher_state(self.teacher_layers[0], self.teacher_index).detach()
        return (batch_embeddings(student, batch.valid, self.level, self.max_frames),
                batch_embeddings(teacher, batch.valid, self.level, self.max_frames))


class RelationalKD(_BatchRelation):
    """Relational KD: ``distance_weight · RKD-D + angle_weight · RKD-A`` over a batch's embeddings.

    Parameters
    ----------
    student_layer : str
        A student layer name, or ``posteriors``.
    teacher_layer : str
        A teacher layer name (online teachers), or ``posteriors`` (the teacher target).
    level : {"utterance", "frame"}
    distance_weight, angle_weight : float
        Park et al. use 1 : 2.
    max_frames : int
        Frame embeddings per batch at ``level: frame`` (angles cost ``max_frames³``).
    teacher_index : int
        The teacher whose layer is read (``posteriors`` is the fused target).
    """

    def __init__(self, student_layer: str, teacher_layer: str = "posteriors", level: str = "utterance",
                 distance_weight: float = 1.0, angle_weight: float = 2.0, max_frames: int = 64,
                 teacher_index: int = 0):
        super().__init__(student_layer, teacher_layer, level, max_frames, teacher_index)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.stats = {}

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        student, teacher = self.embeddings(batch)
        if len(student) < 3:  # one angle needs three samples
            return 0.0 * student.sum()
        distance = F.smooth_l1_loss(pairwise_distances(student), pairwise_distances(teacher))
        angle = F.smooth_l1_loss(triplet_angles(student), triplet_angles(teacher))
        self.stats = {"rkd_distance": float(distance.detach()), "rkd_angle": float(angle.detach())}
        return self.distance_weight * distance + self.angle_weight * angle


class SimilarityPreserving(_BatchRelation):
    """Similarity-preserving KD: ``‖G̃_t − G̃_s‖²_F / n²`` over a batch's embeddings.

    Parameters are those of :class:`RelationalKD` without the weights.
    """

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        student, teacher = self.embeddings(batch)
        n = len(student)
        return (similarity_matrix(student) - similarity_matrix(teacher)).pow(2).sum() / max(n * n, 1)
