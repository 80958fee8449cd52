"""Checkpoint averaging: the best checkpoints' mean weights become one more candidate, chosen on dev."""

import pytest
import torch
from helpers import run_recipe, tiny_overrides

from speechkd.brains.distill import AVERAGED, average_weights
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
    with pytest.raises(ValueError, match="no state dicts"):
        average_weights([])


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
    assert 3 <= len(trained) <= 4  # the 3 best by dev WER, and the latest epoch's if it is not among them
    best = sorted(trained, key=lambda ckpt: ckpt.meta["WER"])[:3]

    # Its weights are the mean of the best three's
    means = {}
    for ckpt in best:
        for name, value in torch.load(ckpt.paramfiles["model"]).items():
            if value.is_floating_point():
                means[name] = means.get(name, 0) + value.double() / 3
    stored = torch.load(averaged[0].paramfiles["model"])
    for name, mean in means.items():
        torch.testing.assert_close(stored[name].double(), mean, rtol=1e-6, atol=1e-6)

    # Its dev WER is a measurement of that model, and the model of record is the best on dev of all four
    assert 0.0 <= averaged[0].meta["WER"] <= 200.0
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
