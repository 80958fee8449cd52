"""A new teacher kind, objective term and prepare function plug in with one file plus YAML.

tests/plugins/toy.py holds the three (none of them known to speechkd) and
tests/plugins/toy_distill.yaml names them; recipes/distill/train.py runs
them unchanged.
"""

import json
import os
import re

import pytest
import speechbrain as sb
import torch
from helpers import REPO, run_recipe

from speechkd.brains.distill import DistillBrain
from speechkd.distill import CTCTerm, Objective, ObjectiveTerm
from speechkd.models import StreamingStudent
from speechkd.text import TokenInventory

PLUGINS = os.path.join(REPO, "tests", "plugins")


def tiny_brain(objective, folder):
    """A DistillBrain of a tiny student with ``objective`` (built, not trained)."""
    inventory = TokenInventory.from_training_texts(["ab"])[0]
    model = StreamingStudent(n_tokens=len(inventory), conv_channels=8, gru_hidden=8)
    checkpointer = sb.utils.checkpoints.Checkpointer(str(folder), recoverables={"model": model})
    return DistillBrain(modules={"model": model}, opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
                        hparams={"objective": objective}, run_opts={"device": "cpu"},
                        checkpointer=checkpointer, inventory=inventory)


class Scaled(ObjectiveTerm):
    """A term that learns: one scale on the student's mean probability."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return self.scale * batch.log_probs.exp().mean()


@pytest.fixture(scope="module")
def speechkd_teacher(tiny_tdnn_teacher):
    return tiny_tdnn_teacher


@pytest.fixture(scope="module")
def toy_run(speechkd_teacher, tiny_corpus, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("seams") / "toy")
    run_recipe("distill/train.py", os.path.join(PLUGINS, "toy_distill.yaml"), output_folder=folder,
               source=tiny_corpus, speechkd_teacher=speechkd_teacher)
    return folder


def test_prepare_function_named_in_yaml_wrote_the_manifests(toy_run, tiny_corpus):
    from speechkd.data.manifest import read_manifest

    for split in ("train", "dev", "test"):
        source = read_manifest(os.path.join(tiny_corpus, f"{split}.csv"))
        written = read_manifest(os.path.join(toy_run, "data", f"{split}.csv"))
        assert [row["ID"] for row in written] == [row["ID"] for row in source[:24]]


def test_student_trained_with_the_new_term_and_the_new_teacher(toy_run):
    with open(os.path.join(toy_run, "train_log.txt")) as fin:
        log = fin.read()
    # every term of the objective is logged by name, the toy term included
    assert re.search(r"train ctc: [\d.e+-]+, train kd: [\d.e+-]+, train entropy: [\d.e+-]+", log), log
    with open(os.path.join(toy_run, "results.json")) as fin:
        assert "test" in json.load(fin)["sets"]


def test_ensemble_of_mixed_inventories_and_frame_shifts(speechkd_teacher):
    """The toy teacher (blank last, '|' between words, 10 ms) beside a speechkd teacher (blank 0, 20 ms)."""
    from toy import RandomTeacher

    from speechkd.distill import TeacherEnsemble, TeacherTarget
    from speechkd.distill.objectives import ObjectiveBatch, PosteriorKL

    ensemble = TeacherEnsemble([speechkd_teacher, RandomTeacher(seed=0)])
    assert ensemble.frame_shifts_ms == [20, 10]
    toy_symbols = ensemble.symbols[1]
    assert toy_symbols[-1] == "<blank>" and toy_symbols[0] == " "  # canonical names, same indices
    student_symbols = ensemble.symbols[0]
    target = TeacherTarget(ensemble, student_symbols, 20, strategy="average")
    assert target.factors == [1, 2]

    wavs = torch.randn(2, 16000) * 0.1
    lens = torch.tensor([1.0, 0.5])
    (lp0, n0), (lp1, n1) = ensemble.log_probs(wavs, lens)
    assert lp1.shape == (2, 100, 28) and n1.tolist() == [100, 50]

    class Batch:
        sig = (wavs, lens)

    teacher = ensemble.teacher_batch(Batch())
    q = target(teacher, n0, lp0.shape[1])
    assert torch.allclose(q.sum(-1), torch.ones_like(q.sum(-1)), atol=1e-5)
    # The toy teacher's blank (index 27) lands on the student's blank (index 0): at a frame
    # where it alone is certain of blank, half of the averaged mass is on the student's blank.
    probs = target.teacher_probs(teacher, n0, lp0.shape[1])
    pooled_blank = lp1.exp()[0, :100, 27].reshape(50, 2).mean(-1)
    assert torch.allclose(probs[0, 1, :50, 0], pooled_blank, atol=1e-3)
    kl = PosteriorKL()(ObjectiveBatch(torch.log_softmax(torch.randn(2, lp0.shape[1], len(student_symbols)), -1),
                                      lens, teacher=teacher, target=target))
    assert torch.isfinite(kl) and kl > 0


def test_a_term_with_parameters_trains_and_is_checkpointed_with_the_model(tmp_path):
    """A learning term (e.g. a hint projection) joins the Brain's modules, optimizer and checkpoint."""
    objective = Objective({"ctc": CTCTerm(), "scaled": Scaled()})
    brain = tiny_brain(objective, tmp_path)
    assert "objective" in brain.modules and brain.checkpointer.recoverables["objective"] is objective
    brain.init_optimizers()
    optimized = {id(p) for group in brain.optimizer.param_groups for p in group["params"]}
    assert id(objective.terms["scaled"].scale) in optimized


def test_a_term_weighted_zero_is_frozen_so_ddp_never_waits_for_its_gradients(tmp_path):
    objective = Objective({"ctc": CTCTerm(), "on": Scaled(), "off": Scaled()}, {"ctc": 1.0, "on": 0.5, "off": 0.0})
    assert "objective" in tiny_brain(objective, tmp_path).modules
    assert objective.terms["on"].scale.requires_grad and not objective.terms["off"].scale.requires_grad
    idle = Objective({"ctc": CTCTerm(), "on": Scaled()}, {"ctc": 1.0, "on": 0.0})
    assert "objective" not in tiny_brain(idle, tmp_path).modules  # nothing of it learns: DDP wraps the model alone
