"""Objective terms beyond posterior matching, each on a case whose answer is known."""

from types import SimpleNamespace

import pytest
import torch
from distill_helpers import SYMBOLS, teachers_like

from speechkd.distill import Teacher, TeacherEnsemble, TeacherTarget
from speechkd.distill.objectives import Objective, ObjectiveBatch
from speechkd.distill.terms import (
    ActivationEnergy,
    BoundarySupportKL,
    CohortEnsemble,
    HintLoss,
    MutualLearning,
    RelationalKD,
    SimilarityPreserving,
)
from speechkd.models import TDNNCTC, StreamingStudent
from speechkd.models.layers import LayerRecorder

V = len(SYMBOLS)


class ModelTeacher(Teacher):
    """A speechkd model in memory as a teacher (what SpeechkdTeacher does with a folder)."""

    def __init__(self, model, name="tdnn"):
        self.model, self.name = model.eval(), name
        self.symbols, self.frame_shift_ms = list(SYMBOLS), model.frame_shift_ms

    def forward_log_probs(self, wavs, wav_lens):
        log_probs = self.model(wavs, wav_lens)
        return log_probs, self.model.output_lengths(wav_lens, wavs.shape[1])

    def log_probs_and_states(self, wavs, wav_lens, layers):
        with LayerRecorder(self.model, layers) as recorder:
            log_probs, frames = self.log_probs(wavs, wav_lens)
        return log_probs, frames, recorder.states

    def fingerprint(self):
        return "in-memory"


def tdnn_teacher(subsampling=1, seed=0):
    torch.manual_seed(seed)
    model = TDNNCTC(V, channels=12, dilations=(1, 2), n_mels=20, subsampling=subsampling, dropout=0.0)
    model.normalizer.fit([(torch.randn(2, 50, 20), torch.ones(2))])
    return ModelTeacher(model)


def student(seed=1, dropout=0.0):
    torch.manual_seed(seed)
    model = StreamingStudent(V, conv_channels=8, gru_hidden=6, n_mels=20, dropout=dropout)
    model.normalizer.fit([(torch.randn(2, 50, 20), torch.ones(2))])
    return model


def audio(batch=3, samples=4000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    wavs = 0.1 * torch.randn(batch, samples, generator=generator)
    lens = torch.linspace(1.0, 0.6, batch)
    return wavs, lens


def online_batch(model, ensemble, layers=(), student_layers=(), **extra):
    """ObjectiveBatch of ``model`` on random audio with the online ``ensemble``'s teacher batch."""
    wavs, lens = audio()
    with LayerRecorder(model, student_layers) as recorder:
        log_probs = model(wavs, lens)
    target = TeacherTarget(ensemble, SYMBOLS, model.frame_shift_ms)
    teacher = ensemble.teacher_batch(SimpleNamespace(sig=(wavs, lens)), layers=layers)
    return ObjectiveBatch(log_probs, lens, teacher=teacher, target=target, student_states=recorder.states,
                          inputs=(wavs, lens), model=model, teachers=ensemble, **extra)


def test_models_expose_named_layers_at_the_output_rate():
    model, teacher = student(), tdnn_teacher(subsampling=2).model
    wavs, lens = audio()
    with LayerRecorder(model, ["encoder", "gru", "conv1"]) as recorder:
        log_probs = model(wavs, lens)
    assert {name: s.shape for name, s in recorder.states.items()} == {
        "encoder": (3, log_probs.shape[1], 6), "gru": (3, log_probs.shape[1], 6), "conv1": (3, log_probs.shape[1], 8)}
    with LayerRecorder(teacher, ["layer1"]) as recorder:
        assert teacher(wavs, lens).shape[1] == recorder_shape(recorder, teacher, wavs, lens)
    with pytest.raises(ValueError, match=r"has no layers \['lstm'\]; it has \[.*'conv0'"):
        LayerRecorder(model, ["lstm"])


def recorder_shape(recorder, model, wavs, lens):
    model(wavs, lens)
    return recorder.states["layer1"].shape[1]


def test_teacher_states_are_pooled_to_the_student_rate_like_posteriors():
    """A 10 ms teacher's layer reaches a 20 ms student as the mean of each frame pair."""
    teacher = tdnn_teacher(subsampling=1)
    ensemble = TeacherEnsemble([teacher])
    model = student()
    batch = online_batch(model, ensemble, layers=("layer0",))
    raw = batch.teacher["states"]["layer0"][0]
    pooled = batch.teacher_state("layer0")
    assert pooled.shape == (3, batch.log_probs.shape[1], 12)
    torch.testing.assert_close(pooled[0, 3], raw[0, 6:8].mean(0))
    with pytest.raises(ValueError, match="need online speechkd teachers"):
        batch.teacher_state("layer1")


def hint_batch(student_states, teacher_states, frames, teacher_delay=0):
    """A batch whose teacher (10 ms) gives ``teacher_states`` and student (20 ms) ``student_states``."""
    batch, time, _ = student_states.shape
    teacher = {"log_probs": torch.zeros(batch, 1, 2 * time, 1), "ids": torch.zeros(batch, 1, 2 * time, 1).long(),
               "frames": 2 * frames[:, None], "states": {"h": [teacher_states]}}
    target = TeacherTarget(teachers_like(SYMBOLS, shifts=(10,), k=1), SYMBOLS, 20, teacher_delay=teacher_delay)
    log_probs = torch.log_softmax(torch.randn(batch, time, V, dtype=torch.float64), -1)
    return ObjectiveBatch(log_probs, frames, teacher=teacher, target=target, student_states={"s": student_states})


def test_hint_is_zero_when_the_projected_student_layer_is_the_teacher_layer():
    torch.manual_seed(0)
    frames = torch.tensor([6, 4])
    teacher_pooled = torch.randn(2, 6, 5, dtype=torch.float64)
    teacher_states = teacher_pooled.repeat_interleave(2, dim=1)  # 10 ms: each 20 ms frame twice
    hint = HintLoss("s", "h", student_dim=5, teacher_dim=5).double()
    with torch.no_grad():
        hint.projection.weight.copy_(torch.eye(5))
        hint.projection.bias.zero_()
    assert float(hint(hint_batch(teacher_pooled.clone(), teacher_states, frames)).detach()) == pytest.approx(0.0, abs=1e-12)
    # one frame off by 1 in every dim: 1 / (6 + 4) valid frames; padding (frame 5 of utt 2) never counts
    shifted = teacher_pooled.clone()
    shifted[0, 2] += 1.0
    shifted[1, 5] += 100.0
    value = hint(hint_batch(shifted, teacher_states, frames))
    assert float(value.detach()) == pytest.approx(1.0 / 10)
    value.backward()
    assert hint.projection.weight.grad.abs().sum() > 0


def test_teacher_states_are_delayed_like_the_posterior_target_for_a_causal_student():
    """With ``teacher_delay`` d, the student's frame t is matched with the teacher's frame t - d."""
    torch.manual_seed(0)
    frames = torch.tensor([6, 4])
    teacher_pooled = torch.randn(2, 6, 5, dtype=torch.float64)
    teacher_states = teacher_pooled.repeat_interleave(2, dim=1)
    delayed = hint_batch(teacher_pooled.clone(), teacher_states, frames, teacher_delay=2).teacher_state("h")
    torch.testing.assert_close(delayed[:, 2:], teacher_pooled[:, :4])
    torch.testing.assert_close(delayed[:, :2], teacher_pooled[:, :1].expand(-1, 2, -1))  # leading silence repeated
    hint = HintLoss("s", "h", student_dim=5, teacher_dim=5).double()
    with torch.no_grad():
        hint.projection.weight.copy_(torch.eye(5))
        hint.projection.bias.zero_()
    late = torch.cat([teacher_pooled[:, :1].expand(-1, 2, -1), teacher_pooled[:, :4]], dim=1)
    assert float(hint(hint_batch(late, teacher_states, frames, teacher_delay=2)).detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(hint(hint_batch(teacher_pooled.clone(), teacher_states, frames, teacher_delay=2)).detach()) > 0.1


def test_activation_energy_ignores_width_and_scale_and_sees_where_energy_moves():
    frames = torch.tensor([6, 4])
    teacher_pooled = torch.randn(2, 6, 5, dtype=torch.float64)
    teacher_states = teacher_pooled.repeat_interleave(2, dim=1)
    term = ActivationEnergy("s", "h")
    wider = 3.0 * torch.cat([teacher_pooled, teacher_pooled], -1)  # twice the width, energy x 18 per frame
    assert float(term(hint_batch(wider, teacher_states, frames))) == pytest.approx(0.0, abs=1e-12)
    moved = teacher_pooled.roll(1, dims=1)
    assert float(term(hint_batch(moved, teacher_states, frames))) > 0.01


def relational_batch(student_emb, teacher_emb):
    """Utterance embeddings given directly: one frame per utterance, the teacher's as its posteriors."""
    n = len(student_emb)
    batch = ObjectiveBatch(torch.zeros(n, 1, V, dtype=torch.float64), torch.ones(n),
                           student_states={"s": student_emb[:, None, :]})
    batch._targets[1.0] = teacher_emb[:, None, :]  # the fused teacher target at tau = 1
    batch.teacher, batch.target = {}, SimpleNamespace(student_vocab=V)
    return batch


@pytest.mark.parametrize("term", [RelationalKD("s"), RelationalKD("s", distance_weight=0.0),
                                  RelationalKD("s", angle_weight=0.0), SimilarityPreserving("s")])
def test_relational_losses_are_invariant_to_a_uniform_scaling_of_the_embeddings(term):
    generator = torch.Generator().manual_seed(3)
    student_emb = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    teacher_emb = torch.randn(5, 7, dtype=torch.float64, generator=generator)
    value = float(term(relational_batch(student_emb, teacher_emb)))
    assert value > 1e-3
    assert float(term(relational_batch(10.0 * student_emb, 0.1 * teacher_emb))) == pytest.approx(value, rel=1e-9)
    # a scaled (and rotated, for the distance and angle) copy of the teacher's relations: zero
    rotation, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64, generator=generator))
    copy = 3.0 * teacher_emb @ rotation if isinstance(term, RelationalKD) else 3.0 * teacher_emb
    assert float(term(relational_batch(copy, teacher_emb))) == pytest.approx(0.0, abs=1e-12)


def test_relational_gradients_match_finite_differences():
    generator = torch.Generator().manual_seed(4)
    teacher_emb = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    student_emb = torch.randn(4, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    for term in (RelationalKD("s"), SimilarityPreserving("s")):
        assert torch.autograd.gradcheck(lambda e, t=term: t(relational_batch(e, teacher_emb)), (student_emb,))


def test_relational_frame_level_reads_the_cached_teacher_posteriors_through_an_objective():
    teacher = tdnn_teacher(subsampling=2)
    model = student()
    objective = Objective({"rkd": RelationalKD("encoder", level="frame", max_frames=16),
                           "sp": SimilarityPreserving("posteriors", level="frame")})
    assert objective.student_layers == ["encoder"] and objective.teacher_layers == []
    values = objective(online_batch(model, TeacherEnsemble([teacher]), student_layers=("encoder",)))
    assert float(values["rkd"]) > 0 and float(values["sp"]) > 0 and values["rkd_angle"] > 0
    values["loss"].backward()
    assert model.ctc_lin.weight.grad.abs().sum() > 0 and model.gru.weight_ih_l0.grad.abs().sum() > 0


def cohort_batch(model, **extra):
    wavs, lens = audio()
    tokens = torch.tensor([[2, 3, 4], [3, 4, 0], [5, 0, 0]])
    return ObjectiveBatch(model(wavs, lens), lens, tokens, torch.tensor([1.0, 2 / 3, 1 / 3]),
                          inputs=(wavs, lens), model=model, **extra)


@pytest.mark.parametrize("cls", [MutualLearning, CohortEnsemble])
def test_cohort_of_identical_peers_has_zero_mutual_term(cls):
    model = student().eval()
    term = cls(peers=2, augment=False, peer_ctc=False)
    term.bind(model)
    assert all(not torch.equal(p.ctc_lin.weight, model.ctc_lin.weight) for p in term.peers)  # fresh weights
    for peer in term.peers:
        peer.load_state_dict(model.state_dict())
    term.eval()
    value = term(cohort_batch(model))
    kl = term.stats["mutual_kl" if cls is MutualLearning else "cohort_kl"]
    assert kl == pytest.approx(0.0, abs=1e-6)  # float32 logsumexp of equal members
    if cls is MutualLearning:
        assert float(value) == pytest.approx(0.0, abs=1e-9)


def test_mutual_learning_trains_peers_and_student_and_ensemble_gate():
    model = student()
    objective = Objective({"dml": MutualLearning(peers=1)})
    objective.bind(model)
    assert sum(p.numel() for p in objective.parameters()) == sum(p.numel() for p in model.parameters())
    values = objective(cohort_batch(model))
    assert values["mutual_kl"] > 0 and values["peer_ctc"] > 0
    values["loss"].backward()
    peer = objective.terms["dml"].peers[0]
    assert peer.ctc_lin.weight.grad.abs().sum() > 0 and model.ctc_lin.weight.grad.abs().sum() > 0
    one = CohortEnsemble(peers=1)
    one.bind(model)
    one(cohort_batch(model)).backward()
    assert one.gate.grad.abs().sum() > 0


def test_boundary_step_lowers_the_teacher_margin_and_the_student_matches_there():
    teacher = tdnn_teacher(subsampling=2)
    ensemble = TeacherEnsemble([teacher])
    model = student()
    term = BoundarySupportKL(epsilon=0.05, steps=2)
    wavs, lens = audio()
    moved, flips = term.boundary_inputs(ensemble, wavs, lens)

    def margin(x):
        with torch.no_grad():
            return sum(float((m * v).sum()) for m, v, _ in term.teacher_margins(ensemble, x, lens))

    assert margin(moved) < margin(wavs)
    assert 0.0 < flips < 1.0
    assert torch.equal(moved[2, int(0.6 * 4000) + 1:], wavs[2, int(0.6 * 4000) + 1:])  # padding untouched
    value = term(online_batch(model, ensemble))
    assert float(value) > 0 and 0 < term.stats["boundary_flips"] < 1
    value.backward()
    assert model.ctc_lin.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.model.parameters())


def test_a_teacher_without_layers_is_refused_by_name():
    class Plain(ModelTeacher):
        log_probs_and_states = Teacher.log_probs_and_states

    plain = Plain(tdnn_teacher().model, name="plain")
    with pytest.raises(NotImplementedError, match=r"teacher 'plain' \(Plain\) exposes no intermediate layers"):
        TeacherEnsemble([plain]).log_probs_and_states(*audio(), ["encoder"])
