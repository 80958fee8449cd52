"""Items 3 and 4 of issue 11: a training run killed -9 resumes to the uninterrupted run's weights, bit for bit,
past a checkpoint an older run left half-written."""

import os

import torch
from conftest import EPOCHS, student_overrides
from reliability_helpers import (
    checkpoint_epochs,
    final_weights,
    kill_when,
    max_difference,
    recipe_command,
    run,
    start,
)


def test_killed_run_resumes_bit_identical_past_an_incomplete_checkpoint(trained_student, tiny_corpus, tmp_path):
    folder = str(tmp_path / "killed")
    command = recipe_command("ctc/train.py", "ctc/student.yaml", student_overrides(tiny_corpus, folder))
    save = os.path.join(folder, "save")
    proc = start(command, str(tmp_path / "killed.log"))
    assert kill_when(proc, lambda: 1 in checkpoint_epochs(save)), "the run ended before the kill"
    assert max(checkpoint_epochs(save)) < EPOCHS
    # What a kill inside SpeechBrain's own save left before: the newest checkpoint with a 0-byte CKPT.yaml
    broken = os.path.join(save, "CKPT+2099-01-01+00-00-00+00")
    os.makedirs(broken)
    open(os.path.join(broken, "CKPT.yaml"), "w").close()
    torch.save({"not": "loaded"}, os.path.join(broken, "model.ckpt"))

    returncode, output = run(command, str(tmp_path / "resumed.log"))

    assert returncode == 0, output[-3000:]
    assert f"ignoring incomplete checkpoint {broken}: CKPT.yaml is empty or incomplete" in output
    resumed, uninterrupted = final_weights(folder), final_weights(trained_student)
    assert resumed.keys() == uninterrupted.keys()
    assert max_difference(resumed, uninterrupted) == 0.0
    assert checkpoint_epochs(save)[-1] == EPOCHS
