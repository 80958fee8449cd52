"""The KD objective (TeacherTarget + PosteriorKL + CTCTerm) against float64 brute-force references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distill_helpers import SYMBOLS, meta_for, random_log_probs, teachers_like

from speechkd.distill.cache import PosteriorCache, PosteriorCacheWriter
from speechkd.distill.losses import reconstruct_dense, teacher_batch_from_log_probs, topk_kl
from speechkd.distill.objectives import (
    CTCTerm,
    Objective,
    ObjectiveBatch,
    ObjectiveTerm,
    PosteriorKL,
)
from speechkd.distill.target import TeacherTarget

V = len(SYMBOLS)


def exact_teacher_batch(per_teacher: list[torch.Tensor], frames: torch.Tensor, k: int) -> dict:
    """Teacher batch with float64 top-k values (no fp16 rounding), for tight comparisons."""
    values, ids = [], []
    for lp in per_teacher:
        width = lp.shape[-1] if k == 0 else k
        v, i = torch.topk(lp, width, dim=-1)
        values.append(v)
        ids.append(i)
    return {"log_probs": torch.stack(values, 1), "ids": torch.stack(ids, 1), "frames": frames}


def reference_kd(student, frames, teachers, k, tau, weights=None, frame_weights=None, rests=None):
    """Brute force, frame by frame, float64 numpy, written independently of the library.

    teachers: list of (batch, time, V) log-prob arrays at the student's rate, same inventory.
    rests: optional list of (batch, time) log rest masses (as a cache stores them), one per teacher;
    without it the rest mass is 1 - sum of the kept probabilities.
    """
    student, teachers = (
        np.asarray(student, np.float64),
        [np.asarray(t, np.float64) for t in teachers],
    )
    total, norm = 0.0, 0.0
    vocab = student.shape[-1]
    kk = vocab if k == 0 else k
    weights = np.full(len(teachers), 1 / len(teachers)) if weights is None else np.asarray(weights)
    for b in range(student.shape[0]):
        for t in range(int(frames[b])):
            combined = np.zeros(vocab)
            for i, (w, teacher) in enumerate(zip(weights, teachers)):
                lp = teacher[b, t]
                keep = np.argsort(-lp)[:kk]
                p = np.zeros(vocab)
                p[keep] = np.exp(lp[keep])
                others = [v for v in range(vocab) if v not in set(keep)]
                if others:
                    rest = max(0.0, 1.0 - p.sum()) if rests is None else float(np.exp(rests[i][b, t]))
                    for v in others:
                        p[v] = rest / len(others)
                p /= p.sum()
                p = p ** (1.0 / tau)
                combined += w * p / p.sum()
            keep = list(np.argsort(-combined)[:kk])
            others = [v for v in range(vocab) if v not in keep]
            s = np.exp(student[b, t] / tau)
            s /= s.sum()
            q_cat = [combined[v] for v in keep] + (
                [sum(combined[v] for v in others)] if others else []
            )
            s_cat = [s[v] for v in keep] + ([sum(s[v] for v in others)] if others else [])
            kl = sum(q * np.log(q / p) for q, p in zip(q_cat, s_cat) if q > 0)
            w = 1.0 if frame_weights is None else frame_weights[b][t]
            total += w * kl
            norm += w
    return tau**2 * total / norm


def make_target(teacher_symbols=(SYMBOLS,), student_symbols=SYMBOLS, shifts=(20,), student_shift=20, k=0,
                dev_wer=None, **options):
    """A TeacherTarget over explicit inventories and shifts (no cache)."""
    teachers = teachers_like(teacher_symbols, shifts, k, dev_wer=dev_wer)
    return TeacherTarget(teachers, student_symbols, student_shift, **options)


def make_loss(alpha=0.0, temperature=1.0, **kl_options):
    """The distillation objective ``α·CTC + (1−α)·τ²·mean_t KL``."""
    return Objective({"ctc": CTCTerm(), "kd": PosteriorKL(temperature=temperature, **kl_options)},
                     {"ctc": alpha, "kd": 1.0 - alpha})


def run(loss, student, lens, teacher=None, target=None, tokens=None, token_lens=None, labelled=None):
    """``loss`` on one batch; ``student`` are logits (log-softmaxed here, as a model outputs)."""
    batch = ObjectiveBatch(F.log_softmax(student, -1), lens, tokens, token_lens, labelled, teacher, target)
    return loss(batch)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_full_distribution_single_teacher_is_exact_kl(tau):
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 9, V, generator=g, dtype=torch.float64) * 2
    teacher_lp = random_log_probs(g, 3, 9, V)
    lens = torch.tensor([1.0, 7 / 9, 4 / 9], dtype=torch.float64)
    frames = torch.tensor([9, 7, 4])
    out = run(make_loss(temperature=tau), student, lens,
              exact_teacher_batch([teacher_lp], frames[:, None], 0), make_target(k=0))
    q = torch.softmax(teacher_lp / tau, -1)
    kl = (q * (torch.log_softmax(teacher_lp / tau, -1) - torch.log_softmax(student / tau, -1))).sum(
        -1
    )
    mask = torch.arange(9)[None, :] < frames[:, None]
    expected = tau**2 * kl[mask].mean()
    assert out["kd"].item() == pytest.approx(expected.item(), abs=1e-10)
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-10)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_two_teachers_matches_brute_force(tau, k):
    g = torch.Generator().manual_seed(int(10 * tau) + k)
    student = torch.randn(2, 6, V, generator=g, dtype=torch.float64) * 2
    teachers = [random_log_probs(g, 2, 6, V), random_log_probs(g, 2, 6, V, scale=1.0)]
    frames = torch.tensor([6, 4])
    target = make_target(teacher_symbols=[SYMBOLS, SYMBOLS], shifts=[20, 20], k=k)
    batch = exact_teacher_batch(teachers, torch.stack([frames, frames], 1), k)
    out = run(make_loss(temperature=tau), student, frames.double() / 6, batch, target)
    expected = reference_kd(student, frames, teachers, k, tau)
    assert out["kd"].item() == pytest.approx(expected, abs=1e-10)


def test_kd_is_scaled_by_tau_squared_and_gradient_matches_analytic():
    g = torch.Generator().manual_seed(3)
    teacher_lp = random_log_probs(g, 1, 5, V)
    student = (torch.randn(1, 5, V, generator=g, dtype=torch.float64)).requires_grad_()
    batch = exact_teacher_batch([teacher_lp], torch.tensor([[5]]), 0)
    tau = 3.0
    out = run(make_loss(temperature=tau), student, torch.ones(1, dtype=torch.float64), batch, make_target())
    q = torch.softmax(teacher_lp / tau, -1)
    s = torch.softmax(student.detach() / tau, -1)
    plain_kl = (q * (q.log() - s.log())).sum(-1).mean()
    assert out["kd"].item() == pytest.approx(tau**2 * plain_kl.item(), abs=1e-10)
    out["loss"].backward()
    # d/dz [tau^2 * mean_t KL] = tau^2 * (1/tau) * (s - q) / n_frames
    assert torch.allclose(student.grad, tau * (s - q) / 5, atol=1e-12)


def test_padding_frames_do_not_change_loss_and_get_no_gradient():
    g = torch.Generator().manual_seed(4)
    student = torch.randn(2, 8, V, generator=g)
    teachers = random_log_probs(g, 2, 8, V, dtype=torch.float32)
    lens = torch.tensor([1.0, 0.625])  # 8 and 5 frames
    frames = torch.tensor([[8], [5]])
    loss = make_loss(temperature=2.0, alpha=0.5)
    target = make_target(k=4)
    targets = torch.tensor([[2, 3, 4], [5, 6, 0]])
    target_lens = torch.tensor([1.0, 2 / 3])
    base = run(
        loss,
        student,
        lens,
        teacher_batch_from_log_probs([teachers], [frames[:, 0]], 4),
        target,
        targets,
        target_lens,
    )

    student2, teachers2 = student.clone(), teachers.clone()
    student2[1, 5:] = torch.randn(3, V, generator=g) * 10
    teachers2[1, 5:] = random_log_probs(g, 3, V, dtype=torch.float32)
    student2.requires_grad_()
    changed = run(
        loss,
        student2,
        lens,
        teacher_batch_from_log_probs([teachers2], [frames[:, 0]], 4),
        target,
        targets,
        target_lens,
    )
    assert changed["loss"].item() == pytest.approx(base["loss"].item(), abs=1e-6)
    assert changed["kd"].item() == pytest.approx(base["kd"].item(), abs=1e-6)
    changed["loss"].backward()
    assert torch.all(student2.grad[1, 5:] == 0)
    assert torch.all(student2.grad[:, :5].abs().sum(-1) > 0)
    assert torch.isfinite(student2.grad).all()


def test_alpha_zero_needs_no_targets_and_alpha_one_is_pure_ctc():
    g = torch.Generator().manual_seed(5)
    student = torch.randn(2, 10, V, generator=g, dtype=torch.float64)
    teacher = exact_teacher_batch([random_log_probs(g, 2, 10, V)], torch.tensor([[10], [7]]), 0)
    target = make_target()
    lens = torch.tensor([1.0, 0.7], dtype=torch.float64)
    targets = torch.tensor([[2, 3, 3, 4], [5, 6, 0, 0]])
    target_lens = torch.tensor([1.0, 0.5])

    kd_only = run(make_loss(alpha=0.0, temperature=2.0), student, lens, teacher, target)
    assert kd_only["loss"].item() == pytest.approx(kd_only["kd"].item(), abs=0)
    assert kd_only["ctc"].item() == 0.0

    ctc_ref = F.ctc_loss(
        F.log_softmax(student, -1).transpose(0, 1),
        targets,
        torch.tensor([10, 7]),
        torch.tensor([4, 2]),
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )
    ctc_only = run(make_loss(alpha=1.0), student, lens, None, None, targets, target_lens)
    assert ctc_only["loss"].item() == pytest.approx(ctc_ref.item(), abs=1e-10)
    assert ctc_only["kd"].item() == 0.0

    mixed = run(make_loss(alpha=0.3, temperature=2.0), student, lens, teacher, target, targets, target_lens)
    assert mixed["loss"].item() == pytest.approx(
        0.3 * ctc_ref.item() + 0.7 * kd_only["kd"].item(), abs=1e-10
    )

    # a CTC term with weight but no transcripts is refused (nothing trains silently without it) ...
    with pytest.raises(ValueError, match="'ctc' .* needs transcripts"):
        run(make_loss(alpha=0.5, temperature=2.0), student, lens, teacher, target)
    # ... unless the batch says which rows are labelled: none here, so CTC adds nothing
    no_labels = run(make_loss(alpha=0.5, temperature=2.0), student, lens, teacher, target,
                    labelled=torch.tensor([False, False]))
    assert no_labels["ctc"].item() == 0.0
    assert no_labels["loss"].item() == pytest.approx(0.5 * kd_only["kd"].item(), abs=1e-12)
    # CTC alone (alpha 1) on a batch of unlabelled rows only (a transfer set without transcripts
    # for them): a zero loss that still backpropagates, zero gradients, instead of a failed step
    logits = student.clone().requires_grad_(True)
    ctc_only = run(make_loss(alpha=1.0), logits, lens, teacher, target, targets, target_lens,
                   labelled=torch.tensor([False, False]))
    assert ctc_only["loss"].item() == 0.0 and ctc_only["loss"].requires_grad
    ctc_only["loss"].backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # ... and a recipe may leave such rows out: CTC alone reads none of them, the KL does
    assert not make_loss(alpha=1.0).reads_unlabelled and make_loss(alpha=0.5).reads_unlabelled
    with pytest.raises(ValueError, match="no teachers"):
        run(make_loss(alpha=0.5), student, lens, None, None, targets, target_lens)
    with pytest.raises(ValueError, match="no teachers"):
        run(make_loss(alpha=0.5), student, lens, teacher, None, targets, target_lens)


def test_finer_teacher_is_pooled_in_probability_domain_with_ragged_tail():
    g = torch.Generator().manual_seed(6)
    teacher_lp = random_log_probs(g, 1, 7, V)  # 7 frames at 10 ms -> 4 at 20 ms
    student = torch.randn(1, 4, V, generator=g, dtype=torch.float64)
    out = run(
        make_loss(temperature=1.0),
        student,
        torch.ones(1, dtype=torch.float64),
        exact_teacher_batch([teacher_lp], torch.tensor([[7]]), 0),
        make_target(shifts=[10], student_shift=20),
    )
    p = teacher_lp.exp()[0]
    pooled = torch.stack([p[0:2].mean(0), p[2:4].mean(0), p[4:6].mean(0), p[6:7].mean(0)])
    expected = reference_kd(student, [4], [pooled.log()[None]], 0, 1.0)
    assert out["kd"].item() == pytest.approx(expected, abs=1e-10)


def test_confident_blank_frames_are_down_weighted():
    g = torch.Generator().manual_seed(7)
    teacher_lp = random_log_probs(g, 1, 6, V)
    confident = torch.full((V,), -12.0, dtype=torch.float64)
    confident[0] = 0.0
    teacher_lp[0, [1, 4]] = torch.log_softmax(confident, -1)
    student = torch.randn(1, 6, V, generator=g, dtype=torch.float64)
    batch = exact_teacher_batch([teacher_lp], torch.tensor([[6]]), 0)
    out = run(make_loss(temperature=2.0, blank_threshold=0.9, blank_weight=0.25),
              student, torch.ones(1, dtype=torch.float64), batch, make_target())
    weights = [[1, 0.25, 1, 1, 0.25, 1]]
    expected = reference_kd(student, [6], [teacher_lp], 0, 2.0, frame_weights=weights)
    assert out["kd"].item() == pytest.approx(expected, abs=1e-10)
    unweighted = run(make_loss(temperature=2.0), student, torch.ones(1, dtype=torch.float64), batch, make_target())
    assert abs(unweighted["kd"].item() - out["kd"].item()) > 1e-3


def test_reconstruction_keeps_cached_topk_and_sums_to_one():
    g = torch.Generator().manual_seed(8)
    lp = random_log_probs(g, 50, V)
    values, ids = torch.topk(lp, 4, -1)
    dense = reconstruct_dense(values, ids, V, torch.float64)
    assert torch.allclose(dense.sum(-1), torch.ones(50, dtype=torch.float64), atol=1e-12)
    assert torch.equal(torch.topk(dense, 4, -1).indices.sort(-1).values, ids.sort(-1).values)
    assert torch.allclose(torch.gather(dense, -1, ids), values.exp(), atol=1e-12)
    rest = 1 - values.exp().sum(-1, keepdim=True)
    others = torch.ones_like(dense, dtype=torch.bool).scatter_(-1, ids, False)
    assert torch.allclose(
        dense[others].view(50, V - 4), (rest / (V - 4)).expand(-1, V - 4), atol=1e-12
    )


def test_topk_kl_rest_bucket_by_hand():
    target = torch.tensor([[[0.5, 0.3, 0.1, 0.1, 0.0]]], dtype=torch.float64)  # last column: OOV
    student = torch.tensor([[[0.4, 0.2, 0.2, 0.2]]], dtype=torch.float64).log()
    kl = topk_kl(target, student, 2)
    expected = 0.5 * np.log(0.5 / 0.4) + 0.3 * np.log(0.3 / 0.2) + 0.2 * np.log(0.2 / 0.4)
    assert kl.item() == pytest.approx(expected, abs=1e-12)


def test_student_inventory_mapping_in_loss():
    teacher_symbols = ["<blank>", "a", "b", "x"]
    student_symbols = ["<blank>", "b", "a"]
    lp = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]], dtype=torch.float64).log()
    student = torch.tensor([[[0.2, 0.3, 0.5]]], dtype=torch.float64).log()
    kwargs = {"teacher_symbols": [teacher_symbols], "student_symbols": student_symbols, "k": 0}
    renorm = make_target(oov_mode="renormalize", **kwargs)
    out = run(
        make_loss(),
        student,
        torch.ones(1, dtype=torch.float64),
        exact_teacher_batch([lp], torch.tensor([[1]]), 0),
        renorm,
    )
    q = np.array([0.1, 0.3, 0.2]) / 0.6
    expected = float(np.sum(q * np.log(q / np.array([0.2, 0.3, 0.5]))))
    assert out["kd"].item() == pytest.approx(expected, abs=1e-12)

    rest = make_target(oov_mode="rest", **kwargs)
    assert rest.k == 2  # room for a rest bucket holding the teacher's "x" mass
    out = run(
        make_loss(),
        student,
        torch.ones(1, dtype=torch.float64),
        exact_teacher_batch([lp], torch.tensor([[1]]), 0),
        rest,
    )
    # top-2 of the mapped target over student tokens: b (0.3), a (0.2); rest = blank 0.1 + x 0.4
    expected = 0.3 * np.log(0.3 / 0.3) + 0.2 * np.log(0.2 / 0.5) + 0.5 * np.log(0.5 / 0.2)
    assert out["kd"].item() == pytest.approx(expected, abs=1e-12)


def test_cached_and_online_teachers_give_the_same_loss(tmp_path):
    g = torch.Generator().manual_seed(9)
    k = 4
    lengths_10ms = [13, 9, 16]
    lengths_20ms = [(n + 1) // 2 for n in lengths_10ms]
    fine = random_log_probs(g, 3, 16, V, dtype=torch.float32)
    coarse = random_log_probs(g, 3, 8, V, dtype=torch.float32)
    meta = meta_for(SYMBOLS, shifts=(10, 20), k=k)
    ids = ["u0", "u1", "u2"]
    with PosteriorCacheWriter(tmp_path, meta, shard_utts=2) as writer:
        for b, utt in enumerate(ids):
            writer.add(utt, [fine[b, : lengths_10ms[b]].numpy(), coarse[b, : lengths_20ms[b]]])
    cache = PosteriorCache.open(tmp_path, expect=meta)
    cached = cache.collate(ids)
    online = teacher_batch_from_log_probs(
        [fine, coarse],
        [torch.tensor(lengths_10ms) / 16, torch.tensor(lengths_20ms) / 8],
        k,
    )
    for key in ("log_probs", "ids", "frames"):
        assert torch.equal(cached[key], online[key]), key

    student = torch.randn(3, 8, V, generator=g)
    lens = torch.tensor(lengths_20ms) / 8
    for strategy in ("average", "geometric", "confidence"):
        target = TeacherTarget(cache, SYMBOLS, 20, strategy=strategy)
        assert target.k == k and target.factors == [2, 1]
        loss = make_loss(alpha=0.0, temperature=2.0)
        a = run(loss, student, lens, cached, target)["loss"]
        b = run(loss, student, lens, online, target)["loss"]
        assert a.item() == b.item()
        assert a.item() > 0


def test_rounded_cache_values_match_reference_on_rounded_inputs(tmp_path):
    g = torch.Generator().manual_seed(10)
    lp = random_log_probs(g, 2, 5, V, dtype=torch.float32)
    batch = teacher_batch_from_log_probs([lp], [torch.ones(2)], 3)
    rounded = torch.full((2, 5, V), -1e4, dtype=torch.float64)
    rounded.scatter_(-1, batch["ids"][:, 0], batch["log_probs"][:, 0].double())
    student = torch.randn(2, 5, V, generator=g, dtype=torch.float64)
    out = run(make_loss(temperature=2.0), student, torch.ones(2, dtype=torch.float64), batch, make_target(k=3))
    rests = [batch["rest_log_probs"][:, 0].double().numpy()]
    assert out["kd"].item() == pytest.approx(
        reference_kd(student, [5, 5], [rounded], 3, 2.0, rests=rests), abs=1e-10
    )
    # fp16 rounding moves the loss only slightly from the unrounded one
    exact = run(
        make_loss(temperature=2.0),
        student,
        torch.ones(2, dtype=torch.float64),
        exact_teacher_batch([lp.double()], torch.tensor([[5], [5]]), 3),
        make_target(k=3),
    )
    assert out["kd"].item() == pytest.approx(exact["kd"].item(), rel=5e-3)


def test_weighted_and_best_strategies_in_the_loss():
    g = torch.Generator().manual_seed(11)
    teachers = [random_log_probs(g, 2, 4, V), random_log_probs(g, 2, 4, V)]
    student = torch.randn(2, 4, V, generator=g, dtype=torch.float64)
    frames = torch.tensor([[4, 4], [4, 4]])
    batch = exact_teacher_batch(teachers, frames, 5)
    lens = torch.ones(2, dtype=torch.float64)
    common = {"teacher_symbols": [SYMBOLS, SYMBOLS], "shifts": [20, 20], "k": 5}
    loss = make_loss(temperature=2.0)
    weighted = make_target(strategy="weighted", strategy_options={"weights": [3.0, 1.0]}, **common)
    expected = reference_kd(student, [4, 4], teachers, 5, 2.0, weights=[0.75, 0.25])
    assert run(loss, student, lens, batch, weighted)["kd"].item() == pytest.approx(expected, abs=1e-10)
    # weights from the teachers' dev WER: w_i ∝ exp(−WER_i / T_w); ln 3 · 10 apart gives 3 : 1
    from_wer = make_target(strategy="weighted", strategy_options={"wer_temperature": 10.0},
                           dev_wer=[5.0, 5.0 + 10 * np.log(3.0)], **common)
    assert run(loss, student, lens, batch, from_wer)["kd"].item() == pytest.approx(expected, abs=1e-10)

    batch["teacher_wer"] = torch.tensor([[10.0, 20.0], [30.0, 5.0]])
    batch["teacher_cer"] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    best = make_target(strategy="best", **common)
    got = run(loss, student, lens, batch, best)["kd"].item()
    first = reference_kd(student[:1], [4], [teachers[0][:1]], 5, 2.0)
    second = reference_kd(student[1:], [4], [teachers[1][1:]], 5, 2.0)
    assert got == pytest.approx((first + second) / 2, abs=1e-10)

    with pytest.raises(ValueError, match="dev WER"):
        make_target(strategy="weighted", **common)
    del batch["teacher_wer"]
    with pytest.raises(ValueError, match="teacher_wer"):
        run(loss, student, lens, batch, best)


def test_teacher_delay_shifts_targets_later_and_blanks_the_lead():
    """With delay d the student at frame t is pulled toward the teacher's frame t - d."""
    from speechkd.distill.losses import delay_frames

    g = torch.Generator().manual_seed(5)
    target = torch.softmax(torch.randn(2, 6, 4, generator=g, dtype=torch.float64), -1)
    delayed = delay_frames(target, 2, blank_index=0)
    assert delayed.shape == target.shape
    assert torch.equal(delayed[:, 2:], target[:, :4])
    assert torch.equal(delayed[:, :2], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand(2, 2, 4))
    assert torch.equal(delay_frames(target, 0), target)

    student = torch.randn(1, 9, V, generator=g, dtype=torch.float64)
    teacher_lp = random_log_probs(g, 1, 9, V)
    frames = torch.tensor([9])
    lens = torch.tensor([1.0], dtype=torch.float64)
    out = run(make_loss(), student, lens, exact_teacher_batch([teacher_lp], frames[:, None], 0),
              make_target(k=0, teacher_delay=3))
    q = delay_frames(torch.softmax(teacher_lp, -1), 3)
    expected = (q * (q.clamp_min(1e-300).log() - torch.log_softmax(student, -1))).sum(-1).mean()
    assert out["kd"].item() == pytest.approx(expected.item(), abs=1e-9)
    with pytest.raises(ValueError, match="teacher_delay"):
        make_target(teacher_delay=-1)


# --------------------------------------------------------------------------- the Objective itself
class Constant(ObjectiveTerm):
    """A term returning a fixed value and counting its calls."""

    def __init__(self, value):
        super().__init__()
        self.value, self.calls = value, 0

    def forward(self, batch):
        self.calls += 1
        return batch.log_probs.new_tensor(self.value)


def test_objective_weights_are_checked_and_weight_zero_terms_are_not_computed():
    with pytest.raises(ValueError, match="unknown terms"):
        Objective({"ctc": CTCTerm()}, {"ctc": 1.0, "kd": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        Objective({"ctc": CTCTerm()}, {"ctc": -0.5})

    a, b, c = Constant(2.0), Constant(-3.0), Constant(100.0)
    objective = Objective({"a": a, "b": b, "c": c}, {"a": 0.25, "c": 0.0})  # b defaults to 1
    assert objective.weights == {"a": 0.25, "b": 1.0, "c": 0.0}
    assert [name for name, _, _ in objective.active()] == ["a", "b"]
    batch = ObjectiveBatch(torch.zeros(1, 2, 3, dtype=torch.float64), torch.ones(1))
    out = objective(batch)
    assert c.calls == 0 and a.calls == 1 and b.calls == 1
    assert out["c"].item() == 0.0
    assert out["a"].item() == 2.0 and out["b"].item() == -3.0
    assert out["loss"].item() == pytest.approx(0.25 * 2.0 - 3.0, abs=1e-15)
    # a weight-0 teacher term makes the objective need no teacher
    only_ctc = Objective({"ctc": CTCTerm(), "kd": PosteriorKL()}, {"kd": 0.0})
    assert not only_ctc.needs_teacher and only_ctc.needs_transcripts
    assert Objective({"kd": PosteriorKL()}).needs_teacher
    assert not Objective({"kd": PosteriorKL()}).needs_transcripts
    assert Objective({"kd": PosteriorKL(conditional="frame")}).needs_transcripts


def test_ctc_term_on_labelled_rows_is_ctc_mean_over_those_rows():
    g = torch.Generator().manual_seed(12)
    log_probs = torch.log_softmax(torch.randn(4, 9, V, generator=g, dtype=torch.float64), -1)
    lens = torch.tensor([1.0, 7 / 9, 5 / 9, 1.0], dtype=torch.float64)
    frames = torch.tensor([9, 7, 5, 9])
    tokens = torch.tensor([[2, 3, 4], [5, 5, 0], [6, 0, 0], [7, 8, 9]])
    token_lens = torch.tensor([3, 2, 1, 3])  # absolute (integer) lengths are taken as they are
    labelled = torch.tensor([True, False, True, False])
    term = CTCTerm()
    got = term(ObjectiveBatch(log_probs, lens, tokens, token_lens, labelled))
    rows = labelled.nonzero()[:, 0]
    expected = F.ctc_loss(log_probs[rows].transpose(0, 1), tokens[rows], frames[rows], token_lens[rows],
                          blank=0, reduction="mean", zero_infinity=True)
    assert got.item() == pytest.approx(expected.item(), abs=1e-12)
    by_hand = np.mean([
        F.ctc_loss(log_probs[r : r + 1].transpose(0, 1), tokens[r : r + 1], frames[r : r + 1],
                   token_lens[r : r + 1], reduction="sum").item() / int(token_lens[r])
        for r in (0, 2)
    ])
    assert got.item() == pytest.approx(by_hand, abs=1e-12)
    # the unlabelled rows' transcripts are never read
    other = tokens.clone()
    other[1] = torch.tensor([9, 9, 9])
    assert term(ObjectiveBatch(log_probs, lens, other, token_lens, labelled)).item() == got.item()
    # all rows labelled: plain F.ctc_loss mean; none labelled: zero
    full = F.ctc_loss(log_probs.transpose(0, 1), tokens, frames, token_lens, reduction="mean", zero_infinity=True)
    assert term(ObjectiveBatch(log_probs, lens, tokens, token_lens)).item() == pytest.approx(full.item(), abs=1e-12)
    none = term(ObjectiveBatch(log_probs, lens, tokens, token_lens, torch.zeros(4, dtype=torch.bool)))
    assert none.item() == 0.0


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_objective_is_alpha_ctc_plus_one_minus_alpha_brute_force_kd(alpha):
    g = torch.Generator().manual_seed(13)
    tau, k = 2.0, 4
    logits = torch.randn(2, 8, V, generator=g, dtype=torch.float64) * 2
    teachers = [random_log_probs(g, 2, 8, V), random_log_probs(g, 2, 8, V, scale=1.5)]
    frames = torch.tensor([8, 6])
    tokens, token_lens = torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2])
    batch = exact_teacher_batch(teachers, torch.stack([frames, frames], 1), k)
    target = make_target(teacher_symbols=[SYMBOLS, SYMBOLS], shifts=[20, 20], k=k)
    out = run(make_loss(alpha=alpha, temperature=tau), logits, frames.double() / 8, batch, target,
              tokens, token_lens.double() / 3)

    ctc = F.ctc_loss(F.log_softmax(logits, -1).transpose(0, 1), tokens, frames, token_lens,
                     reduction="mean", zero_infinity=True).item()
    kd = reference_kd(logits, frames, teachers, k, tau)
    assert out["loss"].item() == pytest.approx(alpha * ctc + (1 - alpha) * kd, abs=1e-10)
    if alpha > 0:
        assert out["ctc"].item() == pytest.approx(ctc, abs=1e-10)
    if alpha < 1:
        assert out["kd"].item() == pytest.approx(kd, abs=1e-10)


def test_fused_log_probs_are_the_tau_one_target_on_the_frames_every_teacher_covers():
    g = torch.Generator().manual_seed(14)
    fine, coarse = random_log_probs(g, 2, 9, V), random_log_probs(g, 2, 5, V)
    teacher = {"log_probs": torch.stack([fine, torch.cat([coarse, torch.zeros(2, 4, V, dtype=torch.float64)], 1)], 1),
               "ids": torch.arange(V).expand(2, 2, 9, V), "frames": torch.tensor([[9, 5], [5, 2]])}
    target = make_target(teacher_symbols=[SYMBOLS, SYMBOLS], shifts=[10, 20], strategy="geometric")
    log_probs, frames = target.fused_log_probs(teacher)
    assert frames.tolist() == [5, 2]  # min(ceil(9 / 2), 5), min(ceil(5 / 2), 2)
    assert log_probs.shape == (2, 5, V)
    direct = target(teacher, frames, 5, 1.0)[..., :V]
    assert torch.allclose(log_probs.exp(), direct.clamp_min(1e-12), atol=1e-6)
    # by hand for the first utterance: pool the 10 ms teacher in probability, then the normalized geometric mean
    p_fine = fine[0].exp().double()
    pooled = torch.stack([p_fine[2 * t : 2 * t + 2].mean(0) for t in range(5)])
    geo = (pooled.log() + coarse[0].double()) / 2
    assert torch.allclose(log_probs[0], torch.log_softmax(geo, -1).float(), atol=1e-5)
