r"""Cohort learning: students taught by each other, no pretrained teacher.

:class:`MutualLearning` (deep mutual learning, Zhang et al. 2018): the
student and ``peers`` more students of its architecture (fresh weights) train
together; each learns CTC on the transcripts and matches every other
member's posteriors::

    L = Σ_peers CTC_p + τ² Σ_i mean_{j≠i} mean_t KL(p_j^τ ‖ p_i^τ)

with the other members' distributions held fixed (detached), as in the
paper's alternating updates. The student's own CTC is the objective's ``ctc``
term.

:class:`CohortEnsemble` (ONE, Lan et al. 2018, without the shared trunk): the
members' gated average ``e = Σ_i g_i p_i`` (gate ``g = softmax(w)``, learned)
is the teacher; it learns CTC itself and every member matches it::

    L = CTC(e) + Σ_peers CTC_p + τ² Σ_i mean_t KL(e^τ ‖ p_i^τ)

Peers are built from the student when training starts (:meth:`bind`): they
are trained by the same optimizer, checkpointed with the objective, and
read the student's normalized features (its fitted normalizer), each with
its own SpecAugment mask while training. Only the student is evaluated and
exported; the peers are training aids.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from speechkd.distill.objectives import CTCTerm, ObjectiveBatch, ObjectiveTerm
from speechkd.models.augment import spec_augment


def frame_kl(target_log_probs: torch.Tensor, log_probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``mean_t KL(target ‖ p)`` over valid frames of ``(batch, time, V)`` log-distributions (full vocabulary)."""
    kl = (target_log_probs.exp() * (target_log_probs - log_probs)).sum(-1)
    weight = valid.to(kl.dtype)
    return (kl * weight).sum() / weight.sum().clamp_min(1.0)


def fresh_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A model of ``model``'s architecture with newly initialized weights."""
    peer = copy.deepcopy(model)
    for module in peer.modules():
        if module is not peer and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return peer


class _Cohort(ObjectiveTerm):
    """Peers built from the student, run on its features, with their own CTC."""

    needs_inputs = True

    def __init__(self, peers: int = 1, temperature: float = 1.0, peer_ctc: bool = True,
                 augment: bool = True, blank_index: int = 0):
        super().__init__()
        if peers < 1:
            raise ValueError(f"a cohort needs at least one peer besides the student, got peers={peers}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.n_peers, self.temperature, self.augment = int(peers), float(temperature), augment
        self.needs_transcripts = peer_ctc
        self.peer_ctc = CTCTerm(blank_index) if peer_ctc else None
        self.peers = torch.nn.ModuleList()
        self.stats = {}

    def bind(self, model) -> None:
        if not len(self.peers):
            self.peers.extend(fresh_copy(model) for _ in range(self.n_peers))

    def peer_log_probs(self, batch: ObjectiveBatch) -> list:
        """``[(batch, time, V)]`` log-probabilities of every peer on the student's input."""
        if not len(self.peers):
            raise ValueError("the cohort has no peers: the brain binds the objective to the student first")
        if batch.inputs is None or batch.model is None:
            raise ValueError("a cohort term needs the batch's inputs and the student model")
        wavs, wav_lens = batch.inputs
        feats = batch.model.featurize(wavs, wav_lens)
        outputs = []
        for peer in self.peers:
            heard = spec_augment(feats, wav_lens) if self.training and self.augment else feats
            outputs.append(F.log_softmax(peer.encode(heard, wav_lens).to(batch.dtype), dim=-1))
        return outputs

    def ctc_of(self, log_probs: torch.Tensor, batch: ObjectiveBatch) -> torch.Tensor:
        if self.peer_ctc is None or batch.tokens is None:
            return log_probs.new_zeros(())
        return self.peer_ctc(ObjectiveBatch(log_probs, batch.frames, batch.tokens, batch.token_lens, batch.labelled))


class MutualLearning(_Cohort):
    """Deep mutual learning between the student and ``peers`` fresh students.

    Parameters
    ----------
    peers : int
        Students besides the one being trained (the cohort has ``peers + 1``).
    temperature : float
    peer_ctc : bool
        Peers learn CTC on the transcripts (the paper's supervised loss).
    augment : bool
        Each peer hears its own SpecAugment mask while training.
    """

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        tau = self.temperature
        peers = self.peer_log_probs(batch)
        members = [F.log_softmax(batch.log_probs / tau, -1)] + [F.log_softmax(lp / tau, -1) for lp in peers]
        mutual = 0.0
        for i, member in enumerate(members):
            others = [frame_kl(other.detach(), member, batch.valid) for j, other in enumerate(members) if j != i]
            mutual = mutual + sum(others) / len(others)
        mutual = tau**2 * mutual
        ctc = sum(self.ctc_of(lp, batch) for lp in peers)
        self.stats = {"mutual_kl": float(mutual.detach()), "peer_ctc": float(ctc.detach()) / len(peers)}
        return ctc + mutual


class CohortEnsemble(_Cohort):
    """ONE-style cohort: the gated average of the members is the teacher of each (see the module doc).

    Parameters are those of :class:`MutualLearning`; the gate ``w`` (one
    logit per member, the student first) is learned with the ensemble's CTC.
    """

    def __init__(self, peers: int = 1, temperature: float = 1.0, peer_ctc: bool = True,
                 augment: bool = True, blank_index: int = 0):
        super().__init__(peers, temperature, peer_ctc, augment, blank_index)
        self.needs_transcripts = True  # the ensemble learns CTC
        self.gate = torch.nn.Parameter(torch.zeros(peers + 1))
        self.ensemble_ctc = CTCTerm(blank_index)

    def ensemble(self, members: list, temperature: float) -> torch.Tensor:
        """``log Σ_i g_i softmax(z_i / τ)`` of ``(batch, time, V)`` member log-probabilities."""
        gate = F.log_softmax(self.gate.to(members[0].dtype), 0)
        tempered = torch.stack([F.log_softmax(m / temperature, -1) for m in members], 0)
        return torch.logsumexp(tempered + gate[:, None, None, None], dim=0)

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        tau = self.temperature
        members = [batch.log_probs, *self.peer_log_probs(batch)]
        teacher = self.ensemble(members, tau).detach()
        distil = tau**2 * sum(frame_kl(teacher, F.log_softmax(m / tau, -1), batch.valid) for m in members)
        ensemble_ctc = (self.ensemble_ctc(ObjectiveBatch(self.ensemble(members, 1.0), batch.frames, batch.tokens,
                                                         batch.token_lens, batch.labelled))
                        if batch.tokens is not None else distil.new_zeros(()))
        ctc = sum(self.ctc_of(lp, batch) for lp in members[1:])
        self.stats = {"cohort_kl": float(distil.detach()), "ensemble_ctc": float(ensemble_ctc.detach())}
        return ensemble_ctc + ctc + distil
