r"""Frame-level knowledge-distillation loss (DESIGN.md, "The KD loss, precisely").

For each non-padded student frame t, with ensemble target q_t^τ and student
logits z_t:

    L = α · CTC(z, y) + (1 − α) · τ² · mean_t KL(q_t^τ ‖ softmax(z_t / τ))

How the teacher target q_t^τ is built from top-k caches
--------------------------------------------------------
Per teacher i (each at its own frame rate and inventory of V_i tokens):

1. **Reconstruct a dense distribution.** The cache holds the k_i most
   probable log-probs (fp16). Their probabilities are kept as stored; the
   remaining mass r = max(0, 1 − Σ cached) is spread uniformly over the
   V_i − k_i non-cached tokens; the result is renormalized to sum to one
   (this only absorbs fp16 rounding). Each spread value r / (V_i − k_i) is at
   most the smallest cached probability (every non-cached token had at most
   that), so the top-k of the reconstruction equals the cached top-k. With
   k_i = V_i this is exactly the teacher's (fp16-rounded) distribution.
2. **Temper** at τ: p ↦ p^{1/τ} / Σ p^{1/τ}, i.e. softmax(log p / τ)
   ("the cached log-probs renormalized at 1/τ"). The uniform spread is
   tempered like any other token, so the rest mass of the tempered teacher
   is the tempered mass of the spread tokens.
3. **Map to the student inventory** by symbol (:class:`~speechkd.distill.align.InventoryMap`),
   with one extra out-of-inventory (OOV) column for teacher tokens the
   student lacks (``oov_mode="rest"``; ``"renormalize"`` drops that mass).
4. **Pool to the student's frame rate**: average probabilities over each
   group of ``student_shift / teacher_shift`` frames, then line the frames up
   with the student's (±1 frame, see :func:`~speechkd.distill.align.match_length`).

Then the per-teacher (batch, teachers, time, V_s + 1) tensor is **combined
densely** by the chosen strategy (:mod:`speechkd.distill.ensemble`), at the
same temperature. Finally the combined distribution is **truncated again**:
its k most probable student tokens (k from the cache; all V_s when the cache
is full) are kept and every other student token plus the OOV column forms
one "rest" bucket. The student's tempered distribution softmax(z_t/τ) is
collapsed onto the same k tokens plus a rest bucket (log-sum-exp of the
other tokens), and the KL runs over those k + 1 categories. For one teacher
with k = V (same inventory, same frame rate) every step is the identity and
the loss is exactly the full KL. (If OOV mass exists in "rest" mode and
k ≥ V_s, k is lowered to V_s − 1 so the student has a rest bucket to match it.)

Frames are averaged over all valid student frames of the batch (each frame
weighs the same). Optionally, frames where the ensemble is confidently blank
(its blank probability at τ = 1 exceeds ``blank_threshold``) get weight
``blank_weight`` and the mean becomes Σ w_t KL_t / Σ w_t.

The CTC term matches ``speechbrain.nnet.losses.ctc_loss`` (relative lengths,
``reduction="mean"``, ``zero_infinity=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from speechkd.distill.align import build_inventory_maps, frame_ratio, match_length, pool_frames
from speechkd.distill.cache import LOG_PROB_FLOOR, stored_width, teacher_symbols, topk_fp16
from speechkd.distill.ensemble import STRATEGIES, combine, weights_from_dev_wer


# --------------------------------------------------------------------------- teacher side
def reconstruct_dense(
    values: torch.Tensor, ids: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Dense distribution from top-k log-probs, rest mass spread uniformly.

    Parameters
    ----------
    values : torch.Tensor
        ``(..., width)`` cached log-probabilities. Columns holding
        :data:`~speechkd.distill.cache.LOG_PROB_FLOOR` (padding) add no mass.
    ids : torch.Tensor
        ``(..., width)`` token ids in ``[0, vocab_size)``.
    vocab_size : int
        The teacher's V.

    Returns
    -------
    torch.Tensor
        ``(..., vocab_size)`` probabilities summing to one: cached tokens keep
        ``exp(value)``, the ``V - k`` other tokens share ``max(0, 1 - Σ exp(values))``
        equally (``k`` = number of distinct cached tokens in the frame).
    """
    probs = values.to(dtype).exp()
    probs = torch.where(
        values <= LOG_PROB_FLOOR, torch.zeros((), dtype=dtype, device=probs.device), probs
    )
    ids = ids.long()
    shape = (*values.shape[:-1], vocab_size)
    dense = torch.zeros(shape, dtype=dtype, device=values.device).scatter_add_(-1, ids, probs)
    real = (values > LOG_PROB_FLOOR).to(dtype)
    cached = torch.zeros(shape, dtype=dtype, device=values.device).scatter_add_(-1, ids, real) > 0
    n_other = (~cached).sum(-1, keepdim=True)
    rest = (1.0 - dense.sum(-1, keepdim=True)).clamp_min(0.0)
    spread = torch.where(n_other > 0, rest / n_other.clamp_min(1).to(dtype), torch.zeros_like(rest))
    dense = torch.where(cached, dense, spread.expand_as(dense))
    return dense / dense.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


def delay_frames(target: torch.Tensor, delay: int, blank_index: int = 0) -> torch.Tensor:
    """Shift distributions ``delay`` frames later along time; the first frames become blank.

    Parameters
    ----------
    target : torch.Tensor
        ``(batch, time, classes)`` per-frame distributions.
    delay : int
        Frames to shift by (0 returns ``target`` unchanged).
    blank_index : int
        Class that the ``delay`` new leading frames put all their mass on.

    Returns
    -------
    torch.Tensor
        ``(batch, time, classes)``: out[:, t] = target[:, t - delay] for t >= delay.
    """
    if delay <= 0:
        return target
    lead = torch.zeros_like(target[:, :1]).expand(-1, delay, -1).clone()
    lead[..., blank_index] = 1.0
    return torch.cat([lead, target], dim=1)[:, : target.shape[1]]


def temper(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^{1/τ} / Σ p^{1/τ}`` over the last dimension (zeros stay zero)."""
    if temperature == 1.0:
        return probs
    logp = torch.where(probs > 0, probs.log(), torch.full_like(probs, float("-inf")))
    return torch.softmax(logp / temperature, dim=-1)


def teacher_batch_from_log_probs(
    per_teacher_log_probs: Sequence[torch.Tensor],
    per_teacher_lens: Sequence[torch.Tensor],
    k: int,
) -> dict:
    """Online teachers -> the same tensors :meth:`PosteriorCache.collate` returns.

    Applies the cache's top-k selection and fp16 rounding
    (:func:`~speechkd.distill.cache.topk_fp16`) so that training from online
    teachers computes the same loss as training from their cache.

    Parameters
    ----------
    per_teacher_log_probs : sequence of torch.Tensor
        One ``(batch, time_i, V_i)`` log-probability tensor per teacher.
    per_teacher_lens : sequence of torch.Tensor
        One ``(batch,)`` relative length tensor per teacher (SpeechBrain style),
        or absolute frame counts if of integer dtype.
    k : int
        Cache k (0 = full distribution).

    Returns
    -------
    dict
        ``log_probs`` ``(batch, teachers, time, width)`` float32, ``ids`` long,
        ``frames`` ``(batch, teachers)`` long.
    """
    device = per_teacher_log_probs[0].device
    batch = per_teacher_log_probs[0].shape[0]
    n_teachers = len(per_teacher_log_probs)
    frames = []
    for lp, lens in zip(per_teacher_log_probs, per_teacher_lens):
        lens = torch.as_tensor(lens, device=device)
        frames.append(
            lens.long() if not lens.is_floating_point() else torch.round(lens * lp.shape[1]).long()
        )
    frames = torch.stack(frames, 1)
    time = max(lp.shape[1] for lp in per_teacher_log_probs)
    width = max(stored_width(k, lp.shape[-1]) for lp in per_teacher_log_probs)
    values = torch.full((batch, n_teachers, time, width), LOG_PROB_FLOOR, device=device)
    values[..., 0] = 0.0
    ids = torch.zeros((batch, n_teachers, time, width), dtype=torch.long, device=device)
    for i, lp in enumerate(per_teacher_log_probs):
        v, t = topk_fp16(lp, k)
        valid = (torch.arange(lp.shape[1], device=device)[None, :] < frames[:, i, None])[..., None]
        w = v.shape[-1]
        values[:, i, : lp.shape[1], :w] = torch.where(
            valid, v.float(), values[:, i, : lp.shape[1], :w]
        )
        values[:, i, : lp.shape[1], w:] = torch.where(
            valid, LOG_PROB_FLOOR, values[:, i, : lp.shape[1], w:]
        )
        ids[:, i, : lp.shape[1], :w] = torch.where(
            valid, t.long(), torch.zeros_like(t, dtype=torch.long)
        )
    return {"log_probs": values, "ids": ids, "frames": frames}


def relative_to_frames(lens: torch.Tensor, time: int) -> torch.Tensor:
    """SpeechBrain relative lengths -> absolute frames, ``round(lens * time)``."""
    if not lens.is_floating_point():
        return lens.long()
    return torch.round(lens * time).long()


# --------------------------------------------------------------------------- KL
def topk_kl(target: torch.Tensor, student_log_probs: torch.Tensor, k: int) -> torch.Tensor:
    """KL(target ‖ student) over the target's top-k student tokens plus a rest bucket.

    Parameters
    ----------
    target : torch.Tensor
        ``(batch, time, V_s + 1)`` target distribution; the last column is
        out-of-inventory mass, which always belongs to the rest bucket.
    student_log_probs : torch.Tensor
        ``(batch, time, V_s)`` student log-probabilities (already tempered).
    k : int
        Tokens kept, ``1 <= k <= V_s``; with ``k == V_s`` there is no student
        rest bucket (the target's OOV column must then be zero).

    Returns
    -------
    torch.Tensor
        ``(batch, time)`` KL in nats.
    """
    vocab = student_log_probs.shape[-1]
    sel_q, sel_ids = torch.topk(target[..., :vocab], k, dim=-1)
    sel_s = torch.gather(student_log_probs, -1, sel_ids)
    kl = (torch.xlogy(sel_q, sel_q) - sel_q * sel_s).sum(-1)
    if k < vocab:
        selected = torch.zeros_like(student_log_probs, dtype=torch.bool).scatter_(-1, sel_ids, True)
        rest_q = target[..., :vocab].masked_fill(selected, 0.0).sum(-1) + target[..., vocab]
        rest_s = torch.logsumexp(student_log_probs.masked_fill(selected, float("-inf")), dim=-1)
        kl = kl + torch.xlogy(rest_q, rest_q) - rest_q * rest_s
    return kl


# --------------------------------------------------------------------------- the loss
class DistillationLoss(torch.nn.Module):
    """CTC + ensemble KD loss; the one thing a distillation brain calls per batch.

    Parameters
    ----------
    teacher_symbols : sequence of sequence of str
        Each teacher's token symbols (``cache.symbols``).
    student_symbols : sequence of str
        The student's token symbols.
    teacher_frame_shifts_ms : sequence of int
        Each teacher's output frame shift.
    student_frame_shift_ms : int
        The student's output frame shift (an integer multiple of every
        teacher's, checked here).
    k : int
        Tokens kept per frame in the KL (the cache's k; 0 = all).
    alpha : float
        CTC weight α in ``[0, 1]``. α = 0 needs no targets.
    temperature : float
        τ > 0.
    strategy : str
        Ensemble strategy name, see :data:`speechkd.distill.ensemble.STRATEGIES`.
    strategy_options : dict, optional
        ``weighted``: ``weights`` (list, static) or ``wer_temperature`` (float,
        weights ∝ exp(−WER_i / T_w) from ``dev_wer``); ``best``: ``metric``
        (``"wer"`` or ``"cer"``, the other breaks ties); ``confidence``:
        ``sharpness`` β (w ∝ exp(−β H)).
    oov_mode : {"rest", "renormalize"}
        Teacher mass on tokens the student lacks, see :class:`~speechkd.distill.align.InventoryMap`.
    teacher_names : sequence of str, optional
        For messages.
    dev_wer : sequence of float, optional
        Teachers' dev WER (percent) for ``weighted`` without static weights.
    blank_index : int
        Student blank index.
    blank_threshold : float, optional
        Frames whose ensemble blank probability (τ = 1) exceeds it get ``blank_weight``.
    blank_weight : float
        Weight of confidently-blank frames in the frame mean.
    max_length_mismatch : int
        Frames by which pooled teacher and student lengths may differ.
    teacher_delay : int
        Student frames by which the combined teacher target is delayed (the
        first ``teacher_delay`` frames become blank). A causal streaming
        student sees no future audio and spikes later than full-context
        teachers (median 2 frames at 20 ms on the quickstart corpus, see
        :func:`speechkd.distill.agreement.spike_offsets`); without the delay, frame-level KD asks it to
        spike before it has heard the sound.
    """

    def __init__(
        self,
        teacher_symbols: Sequence[Sequence[str]],
        student_symbols: Sequence[str],
        teacher_frame_shifts_ms: Sequence[int],
        student_frame_shift_ms: int,
        k: int = 0,
        alpha: float = 0.5,
        temperature: float = 1.0,
        strategy: str = "average",
        strategy_options: dict | None = None,
        oov_mode: str = "rest",
        teacher_names: Sequence[str] | None = None,
        dev_wer: Sequence[float] | None = None,
        blank_index: int = 0,
        blank_threshold: float | None = None,
        blank_weight: float = 1.0,
        max_length_mismatch: int = 1,
        teacher_delay: int = 0,
    ):
        super().__init__()
        if teacher_delay < 0:
            raise ValueError(f"teacher_delay must be >= 0 frames, got {teacher_delay}")
        self.teacher_delay = int(teacher_delay)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown ensemble strategy {strategy!r}; choose one of {sorted(STRATEGIES)}"
            )
        n_teachers = len(teacher_frame_shifts_ms)
        if teacher_symbols and isinstance(teacher_symbols[0], str):
            teacher_symbols = [list(teacher_symbols)] * n_teachers
        if len(teacher_symbols) != n_teachers:
            raise ValueError(
                f"{len(teacher_symbols)} teacher inventories for {n_teachers} teacher frame shifts"
            )
        self.teacher_names = (
            list(teacher_names) if teacher_names else [f"teacher{i}" for i in range(n_teachers)]
        )
        self.maps = build_inventory_maps(
            teacher_symbols, student_symbols, oov_mode, self.teacher_names
        )
        self.factors = [
            frame_ratio(shift, student_frame_shift_ms, name)
            for shift, name in zip(teacher_frame_shifts_ms, self.teacher_names)
        ]
        self.vocab_sizes = [len(s) for s in teacher_symbols]
        self.student_vocab = len(student_symbols)
        self.widths = [stored_width(k, v) for v in self.vocab_sizes]
        k_eff = self.student_vocab if k <= 0 else min(k, self.student_vocab)
        if oov_mode == "rest" and any(m.has_oov for m in self.maps) and k_eff == self.student_vocab:
            k_eff = self.student_vocab - 1
        self.k = k_eff
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.strategy = strategy
        self.strategy_options = dict(strategy_options or {})
        self.blank_index = blank_index
        self.blank_threshold = blank_threshold
        self.blank_weight = float(blank_weight)
        self.max_length_mismatch = max_length_mismatch
        self.static_weights = self._static_weights(dev_wer, n_teachers)

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
                "(record it in the cache with PosteriorCacheWriter.set_dev_wer)"
            )
        if weights.shape != (n_teachers,):
            raise ValueError(f"{weights.numel()} ensemble weights for {n_teachers} teachers")
        return weights

    @classmethod
    def from_cache(
        cls, cache, student_symbols: Sequence[str], student_frame_shift_ms: int, **config
    ) -> DistillationLoss:
        """Build the loss with the teachers' inventories, shifts, k and dev WER taken from ``cache``."""
        return cls(
            teacher_symbols=teacher_symbols(cache.meta),
            student_symbols=student_symbols,
            teacher_frame_shifts_ms=cache.frame_shifts_ms,
            student_frame_shift_ms=student_frame_shift_ms,
            k=config.pop("k", cache.k),
            teacher_names=cache.teacher_names,
            dev_wer=config.pop("dev_wer", cache.dev_wer_list()),
            **config,
        )

    # ------------------------------------------------------------------ teacher target
    def _strategy_kwargs(self, teacher: dict, dtype: torch.dtype, device) -> dict:
        options = self.strategy_options
        if self.strategy == "weighted":
            return {"weights": self.static_weights.to(dtype=dtype, device=device)}
        if self.strategy == "best":
            metric = options.get("metric", "wer")
            other = {"wer": "cer", "cer": "wer"}[metric]
            key = f"teacher_{metric}"
            if key not in teacher:
                raise ValueError(
                    f"strategy 'best' needs '{key}' in the teacher batch (PosteriorCache.collate provides it)"
                )
            return {"errors": teacher[key], "tie_break": teacher.get(f"teacher_{other}")}
        if self.strategy == "confidence":
            return {"sharpness": float(options.get("sharpness", 1.0))}
        return {}

    @torch.no_grad()
    def teacher_target(
        self,
        teacher: dict,
        student_frames: torch.Tensor,
        time: int,
        temperature: float | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Combined ensemble distribution at the student's rate and inventory.

        Parameters
        ----------
        teacher : dict
            From :meth:`PosteriorCache.collate` or :func:`teacher_batch_from_log_probs`.
        student_frames : torch.Tensor
            ``(batch,)`` valid student frames.
        time : int
            Student padded time.
        temperature : float, optional
            Defaults to the loss temperature.

        Returns
        -------
        torch.Tensor
            ``(batch, time, V_s + 1)``, last column = out-of-inventory mass.
        """
        probs = self.teacher_probs(teacher, student_frames, time, temperature, dtype)
        device = student_frames.device
        target = combine(self.strategy, probs, **self._strategy_kwargs(teacher, dtype, device))
        return delay_frames(target, self.teacher_delay, self.blank_index)

    @torch.no_grad()
    def teacher_probs(
        self,
        teacher: dict,
        student_frames: torch.Tensor,
        time: int,
        temperature: float | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Per-teacher tempered distributions before combination (steps 1-4 of the module doc).

        Returns
        -------
        torch.Tensor
            ``(batch, teachers, time, V_s + 1)``.
        """
        tau = self.temperature if temperature is None else temperature
        values, ids, frames = teacher["log_probs"], teacher["ids"], teacher["frames"]
        if values.shape[1] != len(self.maps):
            raise ValueError(
                f"teacher batch has {values.shape[1]} teachers, the loss was built for {len(self.maps)}"
            )
        device = student_frames.device
        per_teacher = []
        for i, inv_map in enumerate(self.maps):
            width = self.widths[i]
            dense = reconstruct_dense(
                values[:, i, :, :width].to(device),
                ids[:, i, :, :width].to(device),
                self.vocab_sizes[i],
                dtype,
            )
            mapped = inv_map.apply(temper(dense, tau))
            pooled, pooled_frames = pool_frames(mapped, frames[:, i].to(device), self.factors[i])
            per_teacher.append(
                match_length(
                    pooled,
                    pooled_frames,
                    student_frames,
                    time,
                    self.max_length_mismatch,
                    inv_map.teacher_name,
                )
            )
        return torch.stack(per_teacher, 1)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        student_out: torch.Tensor,
        student_lens: torch.Tensor,
        teacher: dict | None = None,
        targets: torch.Tensor | None = None,
        target_lens: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute ``α·CTC + (1−α)·τ²·mean_t KL``.

        Parameters
        ----------
        student_out : torch.Tensor
            ``(batch, time, V_s)`` student logits or log-probabilities (the
            loss log-softmaxes either way).
        student_lens : torch.Tensor
            ``(batch,)`` relative lengths in (0, 1] (or absolute frames if integer).
        teacher : dict, optional
            Teacher batch (:meth:`PosteriorCache.collate`); required unless α = 1.
        targets : torch.Tensor, optional
            ``(batch, label_len)`` student token ids; required unless α = 0.
        target_lens : torch.Tensor, optional
            ``(batch,)`` relative (or absolute if integer) target lengths.

        Returns
        -------
        dict
            ``loss`` (scalar to backpropagate), ``ctc`` (the CTC term, zero when
            not computed), ``kd`` (``τ²·mean_t KL``, zero when α = 1 and no
            teacher), so ``loss = α·ctc + (1−α)·kd``.
        """
        _batch, time, vocab = student_out.shape
        if vocab != self.student_vocab:
            raise ValueError(
                f"student outputs {vocab} tokens, the loss was built for {self.student_vocab}"
            )
        dtype = torch.float64 if student_out.dtype == torch.float64 else torch.float32
        logits = student_out.to(dtype)
        frames = relative_to_frames(student_lens.to(logits.device), time)
        zero = logits.new_zeros(())

        ctc = zero
        if self.alpha > 0 or targets is not None:
            if targets is None or target_lens is None:
                raise ValueError(
                    f"alpha={self.alpha} > 0 needs targets and target_lens for the CTC term"
                )
            ctc = F.ctc_loss(
                F.log_softmax(logits, -1).transpose(0, 1),
                targets.to(logits.device).long(),
                frames,
                relative_to_frames(target_lens.to(logits.device), targets.shape[1]),
                blank=self.blank_index,
                reduction="mean",
                zero_infinity=True,
            )

        kd = zero
        if self.alpha < 1 or teacher is not None:
            if teacher is None:
                raise ValueError(f"alpha={self.alpha} < 1 needs the teacher batch for the KD term")
            kd = self.kd_term(logits, frames, teacher)
        loss = self.alpha * ctc + (1.0 - self.alpha) * kd if self.alpha < 1 else ctc
        return {"loss": loss, "ctc": ctc, "kd": kd}

    def kd_term(self, logits: torch.Tensor, frames: torch.Tensor, teacher: dict) -> torch.Tensor:
        """``τ² · Σ_t w_t m_t KL_t / Σ_t w_t m_t`` over the batch (m = valid-frame mask)."""
        _batch, time, _ = logits.shape
        tau = self.temperature
        target = self.teacher_target(teacher, frames, time, dtype=logits.dtype)
        student = F.log_softmax(logits / tau, dim=-1)
        kl = topk_kl(target, student, self.k)
        weight = (torch.arange(time, device=logits.device)[None, :] < frames[:, None]).to(
            logits.dtype
        )
        if self.blank_threshold is not None and self.blank_weight != 1.0:
            plain = (
                target
                if tau == 1.0
                else self.teacher_target(teacher, frames, time, 1.0, logits.dtype)
            )
            confident_blank = plain[..., self.blank_index] > self.blank_threshold
            weight = weight * torch.where(confident_blank, self.blank_weight, 1.0).to(logits.dtype)
        total = weight.sum()
        if total <= 0:
            return logits.new_zeros(()) + 0.0 * logits.sum()
        return tau**2 * (kl * weight).sum() / total
