"""The weights' exponential moving average (``ema_decay``): what dev and test decode, the checkpoint's
``model``, and a run killed between epochs resumes to the uninterrupted run's average."""

from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
from helpers import run_recipe, tiny_overrides

from speechkd.brains.distill import DistillBrain
from speechkd.checkpoints import Checkpointer
from speechkd.experiment import load_model


class AveragingBrain(SimpleNamespace):
    """What :meth:`DistillBrain.update_moving_average` and :meth:`DistillBrain.compute_forward` read of a Brain."""

    track_moving_average = DistillBrain.track_moving_average
    update_moving_average = DistillBrain.update_moving_average
    evaluated_model = DistillBrain.evaluated_model
    compute_forward = DistillBrain.compute_forward


class ConstantModel(torch.nn.Module):
    """Outputs its one weight at every frame: which model ran is read off the output."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, wavs, wav_lens, spec_augment=False):
        return self.weight.expand(wavs.shape[0], 3, 1)

    def output_lengths(self, wav_lens, n_samples):
        return torch.full((len(wav_lens),), 3)

    def layer_taps(self):
        return {}


def test_the_average_moves_one_minus_decay_toward_each_step_and_is_the_checkpoints_model(tmp_path):
    student = torch.nn.BatchNorm1d(2)  # float weights and running statistics, an integer step counter
    checkpointer = Checkpointer(tmp_path / "save", recoverables={"model": student})
    brain = AveragingBrain(student=student)
    brain.moving_average = brain.track_moving_average(0.9, checkpointer)
    average = brain.moving_average
    assert brain.evaluated_model is average and average is not student
    assert checkpointer.recoverables["model"] is average and checkpointer.recoverables["trained_model"] is student
    assert not average.training and not any(p.requires_grad for p in average.parameters())

    with torch.no_grad():
        student.weight.fill_(2.0)  # from 1.0
        student.running_mean.fill_(-1.0)  # from 0.0
    student.num_batches_tracked.fill_(5)
    brain.update_moving_average()
    torch.testing.assert_close(average.weight, torch.full((2,), 1.1))
    torch.testing.assert_close(average.running_mean, torch.full((2,), -0.1))
    assert int(average.num_batches_tracked) == 5
    brain.update_moving_average()
    torch.testing.assert_close(average.weight, torch.full((2,), 1.19))
    torch.testing.assert_close(student.weight, torch.full((2,), 2.0))  # the trained weights are not touched

    checkpoint = checkpointer.save_checkpoint(meta={"WER": 10.0})
    assert float(torch.load(checkpoint.paramfiles["model"])["weight"][0]) == pytest.approx(1.19)
    assert float(torch.load(checkpoint.paramfiles["trained_model"])["weight"][0]) == pytest.approx(2.0)


def test_training_runs_the_student_and_dev_and_test_decode_the_average():
    student = ConstantModel()
    brain = AveragingBrain(student=student, modules=SimpleNamespace(model=student), device="cpu",
                           hparams=SimpleNamespace(augment=False), objective=SimpleNamespace(student_layers=[]))
    brain.moving_average = brain.track_moving_average(0.5, None)
    with torch.no_grad():
        student.weight.fill_(3.0)
    brain.update_moving_average()  # the average: 0.5 * 1 + 0.5 * 3
    batch = SimpleNamespace(sig=(torch.zeros(2, 160), torch.ones(2)))
    batch.to = lambda device: batch
    outputs = {stage: float(brain.compute_forward(batch, stage)[0][0, 0, 0])
               for stage in (sb.Stage.TRAIN, sb.Stage.VALID, sb.Stage.TEST)}
    assert outputs == {sb.Stage.TRAIN: 3.0, sb.Stage.VALID: 2.0, sb.Stage.TEST: 2.0}


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay must be between 0 and 1"):
        AveragingBrain(student=torch.nn.Linear(1, 1)).track_moving_average(decay, None)
    assert AveragingBrain(student=torch.nn.Linear(1, 1)).track_moving_average(None, None) is None


def saved_weights(folder):
    """``(model, trained_model)`` state dicts of the run's most recent checkpoint."""
    checkpointer = Checkpointer(f"{folder}/save")
    latest = checkpointer.find_checkpoint()
    return torch.load(latest.paramfiles["model"]), torch.load(latest.paramfiles["trained_model"])


def test_a_run_decodes_its_average_and_resumes_both_weights_between_epochs(tiny_corpus, tmp_path):
    def overrides(folder, epochs):
        return {**tiny_overrides("student", tiny_corpus, str(tmp_path / folder), epochs=epochs), "ema_decay": 0.9}

    run_recipe("ctc/train.py", "ctc/student.yaml", **overrides("straight", 2))
    average, trained = saved_weights(tmp_path / "straight")
    moved = [name for name, value in trained.items() if value.is_floating_point() and not torch.equal(value, average[name])]
    assert moved, "the average is the trained weights"

    record, _ = load_model(str(tmp_path / "straight"))  # transcribe and export: the average of the best checkpoint
    best = Checkpointer(f"{tmp_path}/straight/save").find_checkpoint(min_key="WER")
    for name, value in torch.load(best.paramfiles["model"]).items():
        assert torch.equal(record.state_dict()[name], value), name
    best_trained = torch.load(best.paramfiles["trained_model"])
    assert any(not torch.equal(record.state_dict()[name], value) for name, value in best_trained.items())

    # Stopped after the first epoch and rerun for two: the same trained weights and the same average
    run_recipe("ctc/train.py", "ctc/student.yaml", **overrides("stopped", 1))
    first_average, _ = saved_weights(tmp_path / "stopped")
    assert any(not torch.equal(value, average[name]) for name, value in first_average.items()), \
        "the average did not move in the second epoch (is it updated after the optimizer steps?)"
    run_recipe("ctc/train.py", "ctc/student.yaml", **overrides("stopped", 2))
    resumed_average, resumed_trained = saved_weights(tmp_path / "stopped")
    for name in trained:
        assert torch.equal(resumed_trained[name], trained[name]), name
        assert torch.equal(resumed_average[name], average[name]), name
