"""Checkpoint averaging: the best checkpoints' mean weights become one more candidate, chosen on dev."""

from types import SimpleNamespace

import pytest
import torch
from helpers import run_recipe, tiny_overrides

from speechkd.brains.distill import AVERAGED, DistillBrain, average_weights
from speechkd.checkpoints import Checkpointer
from speechkd.experiment import load_model


def test_float_weights_are_averaged_and_the_rest_taken_from_the_best():
    best = {"w": torch.tensor([1.0, 2.0]), "fitted": torch.tensor(True), "steps": torch.tensor(7)}
    other = {"w": torch.tensor([3.0, 6.0]), "fitted": torch.tensor(False), "steps": torch.tensor(9)}
    third = {"w": torch.tensor([2.0, 1.0]), "fitted": torch.tensor(False), "steps": torch.tensor(1)}
    mean = average_weights([best, other, third])
    assert torch.equal(mean["w"], torch.tensor([2.0, 3.0]))
    assert mean["w"].dtype == torch.float32
    assert bool(mean["fitted"]) and int(mean["steps"]) == 7
    with pytest.raises(ValueError, match=r"different models: parameters \['v', 'w'\]"):
        average_weights([best, {"v": torch.zeros(2), "fitted": best["fitted"], "steps": best["steps"]}])
    with pytest.raises(ValueError, match=r"w is \(3,\) in one and \(2,\) in the other"):
        average_weights([best, {**best, "w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="no state dicts"):
        average_weights([])
    half = average_weights([{"w": torch.tensor([1.0, 2.0], dtype=torch.float16)},
                            {"w": torch.tensor([2.0, 2.0], dtype=torch.float16)}])
    assert half["w"].dtype == torch.float16 and torch.equal(half["w"], torch.tensor([1.5, 2.0], dtype=torch.float16))


class AveragingBrain(SimpleNamespace):
    """What :meth:`DistillBrain.add_averaged_checkpoint` reads of a Brain, with a dev set scored by a stub."""

    add_averaged_checkpoint = DistillBrain.add_averaged_checkpoint
    evaluated_model = DistillBrain.evaluated_model
    moving_average = None

    def score(self, dataset):
        self.scored = self.student.weight.detach().clone()  # the weights the dev WER was measured on
        return {"wer": self.dev_wer, "cer": self.dev_wer / 5}


def save_trained(checkpointer, model, weight, wer):
    model.weight.data.fill_(weight)
    return checkpointer.save_checkpoint(meta={"WER": wer})


def test_the_average_is_scored_competes_on_dev_wer_and_is_redone_after_more_epochs(tmp_path):
    model = torch.nn.Linear(1, 1, bias=False)
    checkpointer = Checkpointer(tmp_path / "save", recoverables={"model": model})
    logged = []
    brain = AveragingBrain(checkpointer=checkpointer, student=model, average_count=3, dev_wer=10.0,
                           hparams=SimpleNamespace(train_logger=SimpleNamespace(log_stats=lambda **kw: logged.append(kw))))
    trained = [save_trained(checkpointer, model, weight, wer) for weight, wer in ((1, 30.0), (2, 20.0), (3, 25.0), (4, 40.0))]

    brain.add_averaged_checkpoint(valid_set=None)
    assert float(brain.scored) == pytest.approx(2.0)  # epochs with dev WER 20, 25, 30: weights 2, 3, 1
    average = checkpointer.find_checkpoint(min_key="WER")  # 10 < 20: the average wins
    assert average.meta[AVERAGED] == 3 and average.meta["WER"] == 10.0
    assert average.meta["of"] == sorted(ckpt.path.name for ckpt in trained[:3])
    assert float(torch.load(average.paramfiles["model"])["weight"]) == pytest.approx(2.0)
    assert checkpointer.find_checkpoint().path == trained[3].path  # a resumed run goes on from the last epoch
    assert logged == [{"stats_meta": {"averaged checkpoints": 3}, "valid_stats": {"WER": 10.0, "CER": 2.0}}]

    brain.add_averaged_checkpoint(valid_set=None)  # a rerun: the same best three, nothing redone
    assert len(logged) == 1

    newer = save_trained(checkpointer, model, 5, 15.0)  # the run trained one epoch more
    brain.dev_wer = 15.0  # the new average ties with the best epoch
    brain.add_averaged_checkpoint(valid_set=None)
    averages = [ckpt for ckpt in checkpointer.list_checkpoints() if AVERAGED in ckpt.meta]
    assert len(averages) == 1 and float(brain.scored) == pytest.approx((5 + 2 + 3) / 3)
    assert checkpointer.find_checkpoint(min_key="WER").path == newer.path  # a tie keeps the trained checkpoint


def checkpoints(folder):
    model, _ = load_model(folder)  # a model of the run's architecture, to read checkpoints into
    checkpointer = Checkpointer(f"{folder}/save", recoverables={"model": model})
    return checkpointer, model, checkpointer.list_checkpoints()


def test_a_run_keeps_its_best_checkpoints_and_adds_their_average_scored_on_dev(tiny_corpus, tmp_path):
    folder = str(tmp_path / "student")
    overrides = {**tiny_overrides("student", tiny_corpus, folder, epochs=4), "average_checkpoints": 3}
    run_recipe("ctc/train.py", "ctc/student.yaml", **overrides)

    checkpointer, model, saved = checkpoints(folder)
    averaged = [ckpt for ckpt in saved if AVERAGED in ckpt.meta]
    trained = [ckpt for ckpt in saved if AVERAGED not in ckpt.meta]
    assert len(averaged) == 1 and averaged[0].meta[AVERAGED] == 3
    assert averaged[0].path.name == "CKPT+average-of-3"
    assert 3 <= len(trained) <= 4  # the 3 best by dev WER and the 3 most recent
    best = checkpointer.find_checkpoints(min_key="WER", max_num_checkpoints=3,
                                         ckpt_predicate=lambda ckpt: AVERAGED not in ckpt.meta)

    # Its weights are the mean of the best three's
    means = {}
    for ckpt in best:
        for name, value in torch.load(ckpt.paramfiles["model"]).items():
            if value.is_floating_point():
                means[name] = means.get(name, 0) + value.double() / 3
    stored = torch.load(averaged[0].paramfiles["model"])
    for name, mean in means.items():
        torch.testing.assert_close(stored[name].double(), mean, rtol=1e-6, atol=1e-6)

    # The model of record is the best on dev of all four
    record, _ = load_model(folder)
    lowest = min(ckpt.meta["WER"] for ckpt in saved)

    def holds_record(ckpt):
        checkpointer.load_checkpoint(ckpt)
        return all(torch.equal(record.state_dict()[name], value) for name, value in model.state_dict().items())

    assert any(holds_record(ckpt) for ckpt in saved if ckpt.meta["WER"] == lowest)
    # ... and the one the recipe tested: every checkpoint holds the same files (none skipped as incomplete)
    files = {ckpt.path.name: sorted(path.name for path in ckpt.path.iterdir()) for ckpt in saved}
    assert len({tuple(names) for names in files.values()}) == 1, files
    with open(f"{folder}/log.txt") as fin:
        tested = [line.rsplit("/", 1)[-1].strip() for line in fin if "Loading a checkpoint from" in line][-1]
    assert tested in {ckpt.path.name for ckpt in saved if ckpt.meta["WER"] == lowest}

    # A rerun (nothing left to train) finds the average and does not add another
    run_recipe("ctc/train.py", "ctc/student.yaml", **overrides)
    _, _, again = checkpoints(folder)
    assert sorted(ckpt.path.name for ckpt in again) == sorted(ckpt.path.name for ckpt in saved)
