r"""The teacher target: what the ensemble says the student should output, frame by frame.

One object builds it from whatever the teachers gave (a posterior cache or
teachers run online; both yield the same *teacher batch*, see
:meth:`speechkd.distill.cache.PosteriorCache.collate`). Every consumer uses
it: the posterior-KL objective term, conditional T/S, the evaluation of the
fused ensemble, the agreement diagnostic and the low-resource recipe.

How the target q_t^τ is built (DESIGN.md, "The KD loss, precisely")
-------------------------------------------------------------------
Per teacher i (each at its own frame rate and inventory of V_i tokens):

1. **Reconstruct a dense distribution.** The cache holds the k_i most
   probable log-probs (fp16). Their probabilities are kept as stored; the
   remaining mass r = max(0, 1 − Σ cached) is spread uniformly over the
   V_i − k_i non-cached tokens; the result is renormalized to sum to one
   (this only absorbs fp16 rounding). Each spread value r / (V_i − k_i) is at
   most the smallest cached probability, so the top-k of the reconstruction
   equals the cached top-k. With k_i = V_i this is exactly the teacher's
   (fp16-rounded) distribution.
2. **Temper** at τ: p ↦ p^{1/τ} / Σ p^{1/τ}, i.e. softmax(log p / τ).
3. **Map to the student inventory** by symbol (:class:`~speechkd.distill.align.InventoryMap`),
   with one extra out-of-inventory (OOV) column for teacher tokens the
   student lacks (``oov_mode="rest"``; ``"renormalize"`` drops that mass).
   A teacher's blank is named ``<blank>`` wherever its index is (the teacher
   interface does that), so blanks always map onto the student's blank.
4. **Pool to the student's frame rate**: average probabilities over each
   group of ``student_shift / teacher_shift`` frames; a teacher coarser than
   the student has each frame repeated ``teacher_shift / student_shift`` times
   (:func:`~speechkd.distill.align.frame_factors` says why); then line the frames up
   with the student's (±1 frame, see :func:`~speechkd.distill.align.match_length`).

Then the ``(batch, teachers, time, V_s + 1)`` tensor is **combined** by the
chosen strategy (:mod:`speechkd.distill.ensemble`) and optionally **delayed**
by ``teacher_delay`` student frames for a causal student.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from speechbrain.dataio.dataloader import make_dataloader

from speechkd.distill.align import (
    build_inventory_maps,
    frame_factors,
    match_length,
    pool_frames,
    repeat_frames,
)
from speechkd.distill.cache import LOG_PROB_TOLERANCE, check_finite_log_probs, stored_width
from speechkd.distill.ensemble import STRATEGIES, combine, weights_from_dev_wer
from speechkd.distill.losses import delay_frames, reconstruct_dense, temper


class TeacherTarget:
    """The combined teacher distribution at the student's frame rate and inventory.

    Built in YAML as a partial (``teacher_target: !name:speechkd.distill.TeacherTarget``
    with the options below) and completed at run time with the teachers and
    the student, which only the recipe knows.

    Parameters
    ----------
    teachers : PosteriorCache or TeacherEnsemble
        Anything that declares ``teacher_names``, ``symbols`` (one list per
        teacher, blank named ``<blank>``), ``frame_shifts_ms``, ``k`` and
        ``dev_wer_list()``.
    student_symbols : sequence of str
        The student's tokens (blank at ``blank_index``).
    student_frame_shift_ms : int
        The student's output frame shift; an integer multiple or divisor of every teacher's.
    strategy : str
        Ensemble strategy, one of :data:`speechkd.distill.ensemble.STRATEGIES`.
    strategy_options : dict, optional
        ``weighted``: ``weights`` (static list) or ``wer_temperature`` (weights
        ∝ exp(−WER_i / T_w) from the teachers' dev WER); ``best``: ``metric``
        (``wer`` or ``cer``, the other breaks ties); ``confidence``:
        ``sharpness`` β (w ∝ exp(−β H)).
    oov_mode : {"rest", "renormalize"}
        Teacher mass on tokens the student lacks.
    teacher_delay : int
        Student frames by which the combined target is delayed (the first
        frames become blank). A causal streaming student hears no future
        audio and spikes later than full-context teachers (median 2 frames at
        20 ms on the quickstart corpus, see
        :func:`speechkd.distill.agreement.spike_offsets`).
    k : int, optional
        Tokens the KL keeps per frame; defaults to the teachers' (the cache's)
        k. With truncated teachers any other k is refused (a wider KL would
        run over made-up tokens, a narrower one is not what the cache was
        built for); with full distributions (k = 0) any k is a truncation.
    dev_wer : sequence of float, optional
        Teachers' dev WER (percent); defaults to ``teachers.dev_wer_list()``.
    blank_index : int
        The student's blank.
    max_length_mismatch : int
        Frames by which pooled teacher and student lengths may differ (plus
        the repeat factor for a coarser teacher).
    """

    def __init__(
        self,
        teachers,
        student_symbols: Sequence[str],
        student_frame_shift_ms: int,
        strategy: str = "average",
        strategy_options: dict | None = None,
        oov_mode: str = "rest",
        teacher_delay: int = 0,
        k: int | None = None,
        dev_wer: Sequence[float] | None = None,
        blank_index: int = 0,
        max_length_mismatch: int = 1,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown ensemble strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
        if teacher_delay < 0:
            raise ValueError(f"teacher_delay must be >= 0 frames, got {teacher_delay}")
        self.teacher_names = list(teachers.teacher_names)
        teacher_symbols = [list(s) for s in teachers.symbols]
        self.maps = build_inventory_maps(teacher_symbols, student_symbols, oov_mode, self.teacher_names)
        self.factors, self.repeats = map(list, zip(*[frame_factors(shift, student_frame_shift_ms, name)
                                                     for shift, name in zip(teachers.frame_shifts_ms,
                                                                            self.teacher_names)]))
        self.vocab_sizes = [len(s) for s in teacher_symbols]
        self.student_vocab = len(student_symbols)
        self.widths = [stored_width(teachers.k, v) for v in self.vocab_sizes]
        if k is not None and teachers.k > 0 and k != teachers.k:
            raise ValueError(f"the KL's k ({k}) differs from the teachers' cache width k = {teachers.k}: "
                             "leave the target's k unset, or rebuild the cache with that k")
        k = teachers.k if k is None else k
        k_eff = self.student_vocab if k <= 0 else min(k, self.student_vocab)
        if oov_mode == "rest" and any(m.has_oov for m in self.maps) and k_eff == self.student_vocab:
            k_eff = self.student_vocab - 1  # the OOV mass needs a student rest bucket to go to
        self.k = k_eff
        self.strategy = strategy
        self.strategy_options = dict(strategy_options or {})
        self.teacher_delay = int(teacher_delay)
        self.blank_index = blank_index
        self.max_length_mismatch = max_length_mismatch
        # a repeated teacher's frame rounding (lengths are relative to a batch) moves r student frames
        self.tolerances = [max_length_mismatch + (r if r > 1 else 0) for r in self.repeats]
        dev_wer = teachers.dev_wer_list() if dev_wer is None else dev_wer
        self.static_weights = self._static_weights(dev_wer, len(self.maps))

    def _static_weights(self, dev_wer, n_teachers) -> torch.Tensor | None:
        if self.strategy != "weighted":
            return None
        options = self.strategy_options
        if options.get("weights") is not None:
            weights = torch.as_tensor(options["weights"], dtype=torch.float64)
        elif dev_wer is not None:
            weights = weights_from_dev_wer(dev_wer, options.get("wer_temperature", 10.0))
        else:
            raise ValueError(
                "strategy 'weighted' needs strategy_options.weights or the teachers' dev WER "
                "(a cache records it; online teachers need static weights)"
            )
        if weights.shape != (n_teachers,):
            raise ValueError(f"{weights.numel()} ensemble weights for {n_teachers} teachers")
        return weights

    def strategy_kwargs(self, teacher: dict, dtype: torch.dtype, device) -> dict:
        """The keyword arguments :func:`~speechkd.distill.ensemble.combine` needs for this batch."""
        if self.strategy == "weighted":
            return {"weights": self.static_weights.to(dtype=dtype, device=device)}
        if self.strategy == "best":
            metric = self.strategy_options.get("metric", "wer")
            other = {"wer": "cer", "cer": "wer"}[metric]
            if f"teacher_{metric}" not in teacher:
                raise ValueError(f"strategy 'best' needs 'teacher_{metric}' in the teacher batch "
                                 "(a cache provides it; online teachers do not)")
            return {"errors": teacher[f"teacher_{metric}"], "tie_break": teacher.get(f"teacher_{other}")}
        if self.strategy == "confidence":
            return {"sharpness": float(self.strategy_options.get("sharpness", 1.0))}
        return {}

    def pooled_frames(self, teacher: dict) -> torch.Tensor:
        """``(batch,)`` frames at the student's rate that every teacher covers: min_i ceil(frames_i / pool_i) · repeat_i."""
        factors = torch.tensor(self.factors, device=teacher["frames"].device)[None, :]
        repeats = torch.tensor(self.repeats, device=teacher["frames"].device)[None, :]
        pooled = torch.div(teacher["frames"] + factors - 1, factors, rounding_mode="floor")
        return (pooled * repeats).min(1).values

    @torch.no_grad()
    def teacher_probs(self, teacher: dict, student_frames: torch.Tensor, time: int,
                      temperature: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-teacher tempered distributions before combination (steps 1-4 of the module doc).

        Parameters
        ----------
        teacher : dict
            Teacher batch: ``log_probs``/``ids`` ``(batch, teachers, time_t, width)``,
            ``frames`` ``(batch, teachers)``.
        student_frames : torch.Tensor
            ``(batch,)`` valid student frames.
        time : int
            Student padded time.

        Returns
        -------
        torch.Tensor
            ``(batch, teachers, time, V_s + 1)``.
        """
        values, ids, frames = teacher["log_probs"], teacher["ids"], teacher["frames"]
        rest = teacher.get("rest_log_probs")
        self.check_teacher_batch(teacher)
        device = student_frames.device
        per_teacher = []
        for i, inv_map in enumerate(self.maps):
            width = self.widths[i]
            dense = reconstruct_dense(values[:, i, :, :width].to(device), ids[:, i, :, :width].to(device),
                                      self.vocab_sizes[i], dtype, None if rest is None else rest[:, i].to(device))
            mapped = inv_map.apply(temper(dense, temperature))
            pooled, pooled_frames = pool_frames(mapped, frames[:, i].to(device), self.factors[i])
            pooled, pooled_frames = repeat_frames(pooled, pooled_frames, self.repeats[i])
            per_teacher.append(match_length(pooled, pooled_frames, student_frames, time, self.tolerances[i],
                                            inv_map.teacher_name))
        return torch.stack(per_teacher, 1)

    def check_teacher_batch(self, teacher: dict) -> None:
        """Refuse a teacher batch of another shape than the target was built for, or with NaN/+inf values.

        Raises
        ------
        ValueError
            Naming the number of teachers or the columns that differ, or the
            utterance (``utt_ids``, when the batch has them) with bad values.
        """
        values = teacher["log_probs"]
        if values.shape[1] != len(self.maps):
            raise ValueError(f"teacher batch has {values.shape[1]} teachers, the target was built "
                             f"for {len(self.maps)} ({self.teacher_names})")
        if values.shape[-1] != max(self.widths):
            raise ValueError(f"teacher batch has {values.shape[-1]} columns per frame, the target was built for "
                             f"k = {max(self.widths)} (teachers {self.teacher_names}); "
                             "the cache (or online ensemble) and the target must use the same k")
        bad_rows = (~(values <= LOG_PROB_TOLERANCE)).flatten(1).any(1)
        if bool(bad_rows.any()):
            row = int(bad_rows.nonzero()[0])
            names = teacher.get("utt_ids")
            check_finite_log_probs(values[row], f"utterance {names[row] if names else f'#{row} of the batch'}")

    @torch.no_grad()
    def __call__(self, teacher: dict, student_frames: torch.Tensor, time: int,
                 temperature: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The combined, delayed target.

        Returns
        -------
        torch.Tensor
            ``(batch, time, V_s + 1)``, last column = out-of-inventory mass.
        """
        return self.fuse(self.teacher_probs(teacher, student_frames, time, temperature, dtype), teacher)

    def fuse(self, probs: torch.Tensor, teacher: dict) -> torch.Tensor:
        """Combine per-teacher distributions by the strategy, then delay.

        Parameters
        ----------
        probs : torch.Tensor
            ``(batch, teachers, time, V_s + 1)`` from :meth:`teacher_probs`.
        teacher : dict
            The teacher batch (per-utterance errors for ``best``).

        Returns
        -------
        torch.Tensor
            ``(batch, time, V_s + 1)``.
        """
        target = combine(self.strategy, probs, **self.strategy_kwargs(teacher, probs.dtype, probs.device))
        return delay_frames(target, self.teacher_delay, self.blank_index)

    @torch.no_grad()
    def fused_log_probs(self, teacher: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The ensemble as one model, for decoding: combined target at τ = 1 on the frames all teachers cover.

        Returns
        -------
        log_probs : torch.Tensor
            ``(batch, time, V_s)`` (the OOV column dropped, probabilities floored at 1e-12).
        frames : torch.Tensor
            ``(batch,)`` valid frames.
        """
        frames = self.pooled_frames(teacher)
        probs = self(teacher, frames, int(frames.max()))[..., : self.student_vocab]
        return probs.clamp_min(1e-12).log(), frames


def fused_posteriors(teachers, inventory, dataset, strategy="average", strategy_options=None, dev_wer=None,
                      batch_size=16):
    """The ensemble's fused posteriors (``strategy`` at τ = 1), batch by batch, for a decoder.

    Parameters
    ----------
    teachers : speechkd.distill.teachers.TeacherSource
        A posterior cache holding ``dataset``, or a teacher ensemble run now.
    inventory : speechkd.text.TokenInventory
        The inventory the posteriors are fused in.
    dataset : DynamicItemDataset
        With ``id`` (and the audio an online ensemble hears).
    strategy : str
    strategy_options : dict, optional
    dev_wer : list of float, optional
        Teachers' dev WER for ``weighted`` (defaults to the teachers').
    batch_size : int

    Yields
    ------
    batch : speechbrain.dataio.batch.PaddedBatch
    log_probs : torch.Tensor
        ``(batch, time, V)`` fused log-probabilities.
    frames : torch.Tensor
        ``(batch,)`` valid frames.
    """
    target = TeacherTarget(teachers, inventory.symbols, max(teachers.frame_shifts_ms), strategy=strategy,
                           strategy_options=strategy_options, dev_wer=dev_wer)
    for batch in make_dataloader(dataset, batch_size=batch_size):
        log_probs, frames = target.fused_log_probs(teachers.teacher_batch(batch))
        yield batch, log_probs, frames
