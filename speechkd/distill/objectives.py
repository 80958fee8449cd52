r"""The training objective: a weighted sum of terms declared in the YAML.

    L = Σ_j w_j · term_j(batch)

The distillation of DESIGN.md is two terms::

    objective: !new:speechkd.distill.Objective
        terms:
            ctc: !new:speechkd.distill.CTCTerm
            kd: !new:speechkd.distill.PosteriorKL
                temperature: !ref <temperature>
        weights:
            ctc: !ref <alpha>
            kd: !ref 1 - <alpha>

i.e. ``α · CTC(z, y) + (1 − α) · τ² · mean_t KL(q_t^τ ‖ softmax(z_t / τ))``.
A CTC recipe has the ``ctc`` term alone. A new kind of term (hint,
relational, mutual learning, ...) is one class with ``forward(batch)``
returning a scalar; nothing else changes.

Every term reads one :class:`ObjectiveBatch`: the student's outputs, the
transcripts of the labelled utterances, and the teacher target (built once
per temperature and shared by the terms).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from speechkd.distill.align import match_length, pool_frames, repeat_frames
from speechkd.distill.conditional import (
    LEVELS,
    conditional_targets,
    ctc_forced_alignment,
    greedy_matches_reference,
)
from speechkd.distill.losses import delay_states, topk_kl
from speechkd.models.features import relative_lengths_to_absolute


class ObjectiveBatch:
    """What the objective terms of one batch read.

    Parameters
    ----------
    log_probs : torch.Tensor
        ``(batch, time, V_s)`` student log-probabilities.
    student_lens : torch.Tensor
        ``(batch,)`` relative lengths (or absolute frames if integer).
    tokens, token_lens : torch.Tensor, optional
        ``(batch, label_len)`` token ids and ``(batch,)`` relative (or absolute)
        label lengths; rows of unlabelled utterances are never read.
    labelled : torch.Tensor, optional
        ``(batch,)`` bool: utterances whose transcript may be used. Defaults
        to all rows when ``tokens`` is given, none otherwise.
    teacher : dict, optional
        Teacher batch (:meth:`~speechkd.distill.cache.PosteriorCache.collate`
        or :meth:`~speechkd.distill.teachers.TeacherEnsemble.teacher_batch`).
    target : speechkd.distill.target.TeacherTarget, optional
        Turns ``teacher`` into the target at the student's rate and inventory.
    student_states : dict, optional
        Name -> ``(batch, time, dim)`` student intermediate layers at the output
        rate (recorded by :class:`speechkd.models.layers.LayerRecorder`).
    inputs : tuple, optional
        ``(wavs (batch, samples), wav_lens (batch,))``: what the student heard,
        for terms that run models again (boundary samples, peers).
    model : speechkd.models.AcousticModel, optional
        The student (bare, not DDP-wrapped).
    teachers : TeacherEnsemble, optional
        The online teachers (terms that run them on other inputs).
    """

    def __init__(self, log_probs, student_lens, tokens=None, token_lens=None, labelled=None,
                 teacher=None, target=None, student_states=None, inputs=None, model=None, teachers=None):
        self.dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
        self.log_probs = log_probs.to(self.dtype)
        batch, time, _ = log_probs.shape
        self.device = log_probs.device
        self.frames = relative_lengths_to_absolute(student_lens.to(self.device), time)
        self.valid = torch.arange(time, device=self.device)[None, :] < self.frames[:, None]
        self.tokens = None if tokens is None else tokens.to(self.device).long()
        self.token_lens = (None if tokens is None else
                           relative_lengths_to_absolute(token_lens.to(self.device), tokens.shape[1]))
        self.labelled_given = labelled is not None
        if labelled is None:
            labelled = torch.full((batch,), tokens is not None, dtype=torch.bool)
        self.labelled = labelled.to(self.device).bool() & (tokens is not None)
        self.teacher = teacher
        self.target = target
        self._targets = {}
        self.student_states = student_states or {}
        self.inputs, self.model, self.teachers = inputs, model, teachers

    def student_state(self, layer: str) -> torch.Tensor:
        """``(batch, time, dim)`` student layer ``layer``; ``"posteriors"`` is the student's output distribution."""
        if layer == "posteriors":
            return self.log_probs.exp()
        if layer not in self.student_states:
            raise ValueError(f"the student's layer '{layer}' was not recorded (recorded: "
                             f"{sorted(self.student_states)}); the objective declares the layers it reads")
        return self.student_states[layer].to(self.dtype)

    def teacher_state(self, layer: str, index: int = 0) -> torch.Tensor:
        """``(batch, time, dim)`` layer ``layer`` of teacher ``index`` at the student's rate and length.

        Frames are reconciled as for posteriors (:class:`~speechkd.distill.target.TeacherTarget`):
        a finer teacher averaged over groups, a coarser one repeated, lengths
        matched within the target's tolerance, and delayed by the target's
        ``teacher_delay`` (a causal student's frame t is matched with the
        teacher's frame t - delay, as its posteriors are). ``"posteriors"``
        is the fused teacher target at τ = 1 (cached or online; delayed too).
        """
        if layer == "posteriors":
            return self.teacher_target(1.0)
        states = (self.teacher or {}).get("states", {})
        if layer not in states:
            raise ValueError(f"teacher layer '{layer}' is not in the teacher batch (has {sorted(states)}): "
                             "layer terms need online speechkd teachers (a posterior cache stores no states)")
        target = self.target
        values = states[layer][index].to(self.device, self.dtype)
        pooled, frames = pool_frames(values, self.teacher["frames"][:, index].to(self.device), target.factors[index])
        pooled, frames = repeat_frames(pooled, frames, target.repeats[index])
        matched = match_length(pooled, frames, self.frames, self.log_probs.shape[1], target.tolerances[index],
                               target.teacher_names[index])
        return delay_states(matched, target.teacher_delay)

    def teacher_target(self, temperature: float = 1.0) -> torch.Tensor:
        """``(batch, time, V_s + 1)`` teacher target at ``temperature`` (computed once per temperature)."""
        if self.teacher is None or self.target is None:
            raise ValueError("this objective has a teacher term but the batch has no teachers "
                             "(give the recipe a cache or online teachers)")
        if self.target.student_vocab != self.log_probs.shape[-1]:
            raise ValueError(f"the student outputs {self.log_probs.shape[-1]} tokens, the teacher target was "
                             f"built for {self.target.student_vocab}")
        if temperature not in self._targets:
            self._targets[temperature] = self.target(self.teacher, self.frames, self.log_probs.shape[1],
                                                     temperature, self.dtype)
        return self._targets[temperature]


class ObjectiveTerm(torch.nn.Module):
    """One term of the objective. Subclasses set the class flags and implement ``forward``.

    Attributes
    ----------
    needs_teacher : bool
        The term reads the teacher target (the brain then fetches teacher batches).
    needs_transcripts : bool
        The term reads transcripts (the brain then loads tokens).
    reads_unlabelled : bool
        The term learns from utterances without a transcript (a KL to the teachers, a peer's
        posteriors, ...); False for a term that reads the labelled rows only (CTC). A recipe
        leaves unlabelled rows out of training when no active term reads them.

    student_layers : tuple of str
        Student layers the term reads (the brain records them during ``forward``).
    teacher_layers : tuple of str
        Teacher layers the term reads (online teachers then return them).
    needs_inputs : bool
        The term runs models again on the batch's waveforms (``inputs``, ``model``, ``teachers``).
    """

    needs_teacher = False
    needs_transcripts = False
    reads_unlabelled = True
    student_layers = ()
    teacher_layers = ()
    needs_inputs = False

    def bind(self, model) -> None:
        """Called once with the student before training (a term that builds modules from it, e.g. peers)."""

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        """Scalar value of the term on ``batch``; extra statistics go in ``self.stats`` (dict of floats)."""
        raise NotImplementedError


class CTCTerm(ObjectiveTerm):
    """CTC on the labelled utterances: mean over them of CTC_u / |y_u| (``F.ctc_loss``'s ``mean``).

    Zero (with no gradient) when no utterance of the batch is labelled.
    ``zero_infinity`` as in SpeechBrain's ``ctc_loss``: an utterance too short
    for its transcript adds nothing.
    """

    needs_transcripts = True
    reads_unlabelled = False

    def __init__(self, blank_index: int = 0):
        super().__init__()
        self.blank_index = blank_index

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        rows = batch.labelled
        if not bool(rows.any()):
            return batch.log_probs.new_zeros(())
        if bool(rows.all()):
            rows = slice(None)
        return F.ctc_loss(batch.log_probs[rows].transpose(0, 1), batch.tokens[rows], batch.frames[rows],
                          batch.token_lens[rows], blank=self.blank_index, reduction="mean",
                          zero_infinity=True)


class PosteriorKL(ObjectiveTerm):
    r"""Frame-level posterior matching: ``τ² · Σ_t w_t KL(q_t^τ ‖ softmax(z_t/τ)) / Σ_t w_t``.

    The KL runs over the target's top-k student tokens plus one rest bucket
    (:func:`~speechkd.distill.losses.topk_kl`; exact for k = V). Frames are
    averaged over all valid frames of the batch.

    Parameters
    ----------
    temperature : float
        τ > 0, applied to the teachers before fusion and to the student.
    blank_threshold : float, optional
        Frames whose target blank probability (at τ = 1) exceeds it get
        weight ``blank_weight`` instead of one.
    blank_weight : float
    conditional : {None, "frame", "utterance", "alignment"}
        Conditional T/S (Meng et al. 2019) on labelled utterances: where the
        teacher is wrong against the force-aligned transcript (per frame, or
        per utterance on its greedy transcript; ``alignment``: everywhere), the
        target is the one-hot aligned label (:mod:`speechkd.distill.conditional`). ``stats`` then
        holds ``teacher_frames``, the share of labelled frames learnt from the teacher.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 1.0, blank_threshold: float | None = None,
                 blank_weight: float = 1.0, conditional: str | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if conditional is not None and conditional not in LEVELS:
            raise ValueError(f"conditional must be null or one of {LEVELS}, got {conditional!r}")
        self.temperature = float(temperature)
        self.blank_threshold = blank_threshold
        self.blank_weight = float(blank_weight)
        self.conditional = conditional
        self.needs_transcripts = conditional is not None
        self.stats = {}

    def forward(self, batch: ObjectiveBatch) -> torch.Tensor:
        tau = self.temperature
        target = batch.teacher_target(tau)
        self.stats = {}
        if self.conditional is not None and bool(batch.labelled.any()):
            target = self.conditional_target(batch, target)
        student = F.log_softmax(batch.log_probs / tau, dim=-1)
        kl = topk_kl(target, student, batch.target.k)
        weight = batch.valid.to(batch.dtype)
        if self.blank_threshold is not None and self.blank_weight != 1.0:
            confident_blank = batch.teacher_target(1.0)[..., batch.target.blank_index] > self.blank_threshold
            weight = weight * torch.where(confident_blank, self.blank_weight, 1.0).to(batch.dtype)
        total = weight.sum()
        if total <= 0:
            return 0.0 * batch.log_probs.sum()
        return tau**2 * (kl * weight).sum() / total

    def conditional_target(self, batch: ObjectiveBatch, target: torch.Tensor) -> torch.Tensor:
        """The target with one-hot aligned labels where the teacher is wrong (labelled rows only)."""
        blank = batch.target.blank_index
        probs = batch.teacher_target(1.0)[..., :-1]
        alignment = ctc_forced_alignment(probs.clamp_min(1e-30).log(), batch.frames, batch.tokens,
                                         batch.token_lens, blank)
        right = (greedy_matches_reference(probs, batch.frames, batch.tokens, batch.token_lens, blank)
                 if self.conditional == "utterance" else None)
        target, from_teacher = conditional_targets(target, alignment, batch.labelled, self.conditional, right)
        counted = batch.valid & batch.labelled[:, None]
        self.stats["teacher_frames"] = float((from_teacher & counted).sum() / counted.sum().clamp_min(1))
        return target


class Objective(torch.nn.Module):
    """Weighted sum of named terms: ``Σ_j w_j · term_j``.

    Parameters
    ----------
    terms : mapping of str to ObjectiveTerm
        In the order they are summed and logged.
    weights : mapping of str to float, optional
        Weight per term name (default 1). A term of weight 0 is not computed.

    Raises
    ------
    ValueError
        On a weight for no term, or a negative weight.
    """

    def __init__(self, terms: Mapping[str, ObjectiveTerm], weights: Mapping[str, float] | None = None):
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"objective weights for unknown terms {unknown}; terms are {list(terms)}")
        self.terms = torch.nn.ModuleDict(dict(terms))
        self.weights = {name: float(weights.get(name, 1.0)) for name in terms}
        negative = {name: w for name, w in self.weights.items() if w < 0}
        if negative:
            raise ValueError(f"objective weights must be >= 0, got {negative}")

    def active(self):
        """``(name, term, weight)`` of the terms with a non-zero weight."""
        return [(name, term, self.weights[name]) for name, term in self.terms.items() if self.weights[name]]

    @property
    def needs_teacher(self) -> bool:
        return any(term.needs_teacher for _, term, _ in self.active())

    @property
    def needs_transcripts(self) -> bool:
        return any(term.needs_transcripts for _, term, _ in self.active())

    @property
    def reads_unlabelled(self) -> bool:
        """Whether any active term learns from utterances without a transcript."""
        return any(term.reads_unlabelled for _, term, _ in self.active())

    @property
    def needs_inputs(self) -> bool:
        return any(term.needs_inputs for _, term, _ in self.active())

    @property
    def student_layers(self) -> list:
        """Student layers the active terms read (``posteriors`` is the output, not a layer)."""
        return sorted({name for _, term, _ in self.active() for name in term.student_layers} - {"posteriors"})

    @property
    def teacher_layers(self) -> list:
        """Teacher layers the active terms read."""
        return sorted({name for _, term, _ in self.active() for name in term.teacher_layers} - {"posteriors"})

    def bind(self, model) -> None:
        """Give every active term the student (before the optimizer is built)."""
        for _, term, _ in self.active():
            term.bind(model)

    def forward(self, batch: ObjectiveBatch) -> dict[str, torch.Tensor]:
        """Every active term and their weighted sum.

        Returns
        -------
        dict
            ``loss`` (the scalar to backpropagate), one entry per term name
            (its unweighted value; zero for weight-0 terms) and each term's
            ``stats``.
        """
        values = {name: batch.log_probs.new_zeros(()) for name in self.terms}
        loss = None
        for name, term, weight in self.active():
            if term.needs_transcripts and batch.tokens is None and not batch.labelled_given:
                raise ValueError(f"objective term '{name}' (weight {weight}) needs transcripts but the batch "
                                 "has none; give it weight 0, or a `labelled` item marking the unlabelled rows")
            values[name] = term(batch)
            loss = weight * values[name] if loss is None else loss + weight * values[name]
            values.update(getattr(term, "stats", {}))
        if loss is None or (batch.log_probs.requires_grad and not (torch.is_tensor(loss) and loss.requires_grad)):
            # No active term reached the student on this batch (only CTC active, and every row of the
            # batch unlabelled): a zero that still backpropagates, so the step (and DDP's all-reduce,
            # which waits for every parameter's gradient) goes on with zero gradients. The optimizer
            # still steps (AdamW's momentum and weight decay move the weights): recipes leave such
            # rows out of training where they can (`reads_unlabelled`)
            loss = (0.0 if loss is None else loss) + 0.0 * batch.log_probs.sum()
        values["loss"] = loss
        return values
