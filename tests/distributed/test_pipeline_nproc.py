"""``nproc:`` on a pipeline stage launches its recipe through torchrun, alone; other stages are unchanged."""

import os
import sys

from speechkd.experiment import load_hparams
from speechkd.pipeline import REPO_ROOT, Pipeline, recipe_command


def stages_by_name(nproc):
    hparams, _ = load_hparams(os.path.join(REPO_ROOT, "hparams/pipelines/tiny.yaml"))
    if nproc:
        hparams["student"]["nproc"] = nproc
    return {stage.name: stage for stage in Pipeline(hparams).stages()}


def test_a_stage_with_nproc_runs_through_torchrun_and_alone():
    plain, ddp = stages_by_name(None), stages_by_name(2)
    assert plain["baseline"].parallel and not ddp["baseline"].parallel
    assert ddp["baseline"].config["nproc"] == 2 and "nproc" not in plain["baseline"].config
    teachers = [name for name in plain if name.startswith("teacher_")]
    assert teachers and all(ddp[name].parallel and ddp[name].config == plain[name].config for name in teachers)


def test_recipe_command():
    single = recipe_command("recipes/ctc/train.py", "h.yaml", {"lr": 0.1})
    assert single == [sys.executable, os.path.join(REPO_ROOT, "recipes/ctc/train.py"), "h.yaml", "--lr=0.1"]
    torchrun = recipe_command("recipes/ctc/train.py", "h.yaml", {"lr": 0.1}, nproc=4)
    assert torchrun[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert torchrun[5:8] == single[1:] and torchrun[8] in ("--distributed_backend=gloo", "--distributed_backend=nccl")
