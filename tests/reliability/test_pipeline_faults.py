"""Items 1 and 6 of issue 11: `speechkd run` retrains a stage whose settings changed or that is forced (never
reloads its old checkpoint), resumes a killed one, holds its output folder against a second run, and takes
its stage and recipe processes down with it when killed."""

import os
import sys

import pytest
from reliability_helpers import alive, descendants, kill_when, start, wait_until

from speechkd.pipeline import run as pipeline_run
from speechkd.stages import STARTED_FILE, FolderLocked, Stage, folder_lock, run_stages

PIPELINE = "hparams/pipelines/tiny.yaml"


def into(out):
    """Overrides that send the tiny pipeline's run into ``out`` (its corpus in ``out/data``)."""
    return [f"--output_folder={out}", f"--data_folder={out}/data"]


def student(gru_hidden):
    """``--student=...``: the tiny pipeline's baseline, one epoch, with this GRU size."""
    return ("--student={hparams: hparams/ctc/student.yaml, overrides: {number_of_epochs: 1, conv_channels: 16, "
            f"gru_hidden: {gru_hidden}}}}}")


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """A tiny pipeline's output folder with its corpus stage done."""
    out = str(tmp_path_factory.mktemp("pipeline") / "run")
    pipeline_run(PIPELINE, into(out), stop="corpus")
    return out


def test_a_stage_whose_settings_changed_trains_from_scratch(pipeline_folder, capsys):
    from speechkd.experiment import load_model

    baseline = os.path.join(pipeline_folder, "baseline")
    for gru_hidden in (16, 24):
        pipeline_run(PIPELINE, [*into(pipeline_folder), "--workers=1", student(gru_hidden)],
                     start="baseline", stop="baseline")
        model, _ = load_model(baseline)
        assert model.gru.hidden_size == gru_hidden  # not a size mismatch on the old checkpoint
        with open(os.path.join(baseline, "train_log.txt")) as fin:
            assert [line.split(",")[0] for line in fin if line.startswith("epoch")] == ["epoch: 1"]
    assert "[baseline] starting clean" in capsys.readouterr().out


def test_killing_the_run_ends_its_stage_processes_and_a_second_run_is_refused(pipeline_folder, tmp_path):
    command = [sys.executable, "-m", "speechkd.cli", "run", PIPELINE, *into(pipeline_folder), "--to", "baseline"]
    proc = start(command, str(tmp_path / "run.log"))
    # the corpus is done: two teacher stages start, each in its own process, and run their recipes
    assert wait_until(lambda: len(descendants(proc.pid)) >= 3), "the stage processes did not start"
    processes = descendants(proc.pid)

    with pytest.raises(FolderLocked, match=f"is in use by another speechkd run \\(pid {proc.pid},"):
        pipeline_run(PIPELINE, into(pipeline_folder), stop="corpus")

    assert kill_when(proc, lambda: True)
    assert wait_until(lambda: not alive(processes), timeout=15), f"orphans: {alive(processes)}"
    with folder_lock(pipeline_folder):  # the lock ended with its holder
        pass


def test_force_restarts_a_stage_and_a_killed_stage_resumes(tmp_path):
    restarts = []

    def stage():
        return Stage("train", str(tmp_path), lambda: None, {"lr": 0.1}, restart=lambda: restarts.append(1))

    run_stages([stage()], echo=lambda line: None)
    assert restarts == []  # a first run has nothing to clear
    run_stages([stage()], force=["train"], echo=lambda line: None)
    assert restarts == [1]
    os.remove(tmp_path / ".done")  # killed: started under the same settings, never finished
    run_stages([stage()], echo=lambda line: None)
    assert restarts == [1]
    with open(tmp_path / STARTED_FILE, "w") as fout:  # killed while running under other settings
        fout.write("other\n")
    os.remove(tmp_path / ".done")
    run_stages([stage()], echo=lambda line: None)
    assert restarts == [1, 1]
