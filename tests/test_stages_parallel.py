"""Parallel stages: run in their own processes, failures name the stage."""

import os
import subprocess
import sys

import pytest

from speechkd.stages import (
    DONE_FILE,
    Stage,
    StageFailed,
    fingerprint,
    run_stages,
    stage_fingerprints,
)


def stages(tmp_path, calls):
    def record(name):
        return lambda: calls.append(name)

    return [
        Stage("a", str(tmp_path / "a"), record("a"), 1),
        Stage("p1", str(tmp_path / "p1"), record("p1"), 2, after=("a",), parallel=True),
        Stage("p2", str(tmp_path / "p2"), record("p2"), 3, after=("a",), parallel=True),
        Stage("z", str(tmp_path / "z"), record("z"), 4, after=("p1", "p2")),
    ]


def launcher(fail=None):
    """Each launched stage is a process that writes the stage's .done marker (as `speechkd run` does)."""
    launched = []

    def launch(stage, fresh=False):
        launched.append((stage.name, fresh) if fresh else stage.name)
        upstream = {"a": fingerprint({"config": 1, "upstream": {}})}
        mark = fingerprint({"config": stage.config, "upstream": upstream})
        code = "import sys; sys.exit(3)" if stage.name == fail else (
            f"open({str(stage.folder + '/' + DONE_FILE)!r}, 'w').write({mark!r})")
        return subprocess.Popen([sys.executable, "-c", code])

    return launch, launched


def test_parallel_group_runs_in_processes(tmp_path):
    calls = []
    launch, launched = launcher()
    status = run_stages(stages(tmp_path, calls), launch=launch, workers=2, echo=lambda line: None)
    assert sorted(launched) == [("p1", True), ("p2", True)]  # `a` has just been (re)done: start clean
    assert calls == ["a", "z"]  # p1, p2 ran in the launched processes, not here
    assert status == {"a": "done", "p1": "done", "p2": "done", "z": "done"}
    calls.clear()
    status = run_stages(stages(tmp_path, calls), launch=launch, workers=2, echo=lambda line: None)
    assert set(status.values()) == {"skipped"} and calls == []


def test_a_redone_stage_makes_the_processes_of_its_dependents_start_clean(tmp_path):
    """`--force a`: p1 and p2 still hold a matching `.done`, so their processes must be told to redo."""
    launch, launched = launcher()
    run_stages(stages(tmp_path, []), launch=launch, workers=2, echo=lambda line: None)
    launched.clear()
    status = run_stages(stages(tmp_path, []), force=["a"], launch=launch, workers=2, echo=lambda line: None)
    assert sorted(launched) == [("p1", True), ("p2", True)]
    assert status == dict.fromkeys(["a", "p1", "p2", "z"], "done")
    launched.clear()
    run_stages(stages(tmp_path, []), force=["p2"], launch=launch, workers=2, echo=lambda line: None)
    assert launched == [("p2", True)]  # p1 did not change: it is skipped, not relaunched


def test_failed_parallel_stage_is_named(tmp_path):
    launch, _ = launcher(fail="p2")
    with pytest.raises(StageFailed, match="stage 'p2' failed .*exit code 3"):
        run_stages(stages(tmp_path, []), launch=launch, workers=2, echo=lambda line: None)


def test_one_worker_runs_parallel_stages_in_process(tmp_path):
    calls = []
    launch, launched = launcher()
    run_stages(stages(tmp_path, calls), launch=launch, workers=1, echo=lambda line: None)
    assert launched == [] and calls == ["a", "p1", "p2", "z"]


def test_a_stage_starts_when_its_own_inputs_are_done_beside_a_slow_unrelated_one(tmp_path):
    """distill-like `next` needs only `fast`: it runs while `slow` (a baseline) still trains."""
    def record(name):
        return lambda: calls.append(name)

    calls = []
    graph = [
        Stage("a", str(tmp_path / "a"), record("a"), 1),
        Stage("slow", str(tmp_path / "slow"), record("slow"), 2, after=("a",), parallel=True),
        Stage("fast", str(tmp_path / "fast"), record("fast"), 3, after=("a",), parallel=True),
        Stage("next", str(tmp_path / "next"), record("next"), 4, after=("fast",), parallel=True),
        Stage("z", str(tmp_path / "z"), record("z"), 5, after=("slow", "next")),
    ]
    prints = stage_fingerprints(graph)
    slow_done = tmp_path / "slow" / DONE_FILE
    seen = {}

    def launch(stage, fresh=False):
        seen[stage.name] = slow_done.exists()
        delay = 3.0 if stage.name == "slow" else 0.0
        code = f"import time; time.sleep({delay}); open({str(stage.folder + '/' + DONE_FILE)!r}, 'w').write({prints[stage.name]!r})"
        return subprocess.Popen([sys.executable, "-c", code])

    timings = {}
    status = run_stages(graph, launch=launch, workers=2, echo=lambda line: None, timings=timings)
    assert status == dict.fromkeys(["a", "slow", "fast", "next", "z"], "done")
    assert seen == {"slow": False, "fast": False, "next": False}  # `next` launched while `slow` ran
    assert calls == ["a", "z"]  # z, run in this process, waited for both
    assert timings["slow"] >= 3.0 and timings["next"] < 3.0


def test_a_background_stage_runs_beside_the_workers_and_an_in_process_stage_does_not_wait_for_it(tmp_path):
    """A baseline-like `background` stage starts at once beside `workers` = 2 foreground processes, not
    counted among them; an in-process stage that does not read it runs while it still trains."""
    bg_done = tmp_path / "bg" / DONE_FILE
    export_ran_while_bg_trained = []
    graph = [
        Stage("a", str(tmp_path / "a"), lambda: None, 1),
        Stage("bg", str(tmp_path / "bg"), None, 2, after=("a",), parallel=True, background=True),
        Stage("fg1", str(tmp_path / "fg1"), None, 3, after=("a",), parallel=True),
        Stage("fg2", str(tmp_path / "fg2"), None, 4, after=("a",), parallel=True),
        Stage("export", str(tmp_path / "export"), lambda: export_ran_while_bg_trained.append(not bg_done.exists()), 5,
              after=("fg1", "fg2")),
        Stage("z", str(tmp_path / "z"), lambda: None, 6, after=("bg", "export")),
    ]
    prints = stage_fingerprints(graph)
    launched = []

    def launch(stage, fresh=False):
        launched.append((stage.name, stage.background, bg_done.exists()))
        delay = 3.0 if stage.name == "bg" else 0.0
        code = f"import time; time.sleep({delay}); open({str(stage.folder + '/' + DONE_FILE)!r}, 'w').write({prints[stage.name]!r})"
        return subprocess.Popen([sys.executable, "-c", code])

    timings = {}
    status = run_stages(graph, launch=launch, workers=2, echo=lambda line: None, timings=timings)
    assert set(status.values()) == {"done"}
    # three processes at once with two workers: the background one is not counted
    assert launched == [("bg", True, False), ("fg1", False, False), ("fg2", False, False)]
    assert export_ran_while_bg_trained == [True]
    assert timings["fg2"] < 3.0 <= timings["bg"]


def test_spawn_lowers_the_priority_of_a_background_process_and_of_what_it_starts():
    """`nice` in spawn: the child, and the recipe processes it starts, run that much lower."""
    from speechkd.stages import spawn

    here = os.nice(0)
    code = ("import os, subprocess, sys; print(os.nice(0)); "
            "print(subprocess.run([sys.executable, '-c', 'import os; print(os.nice(0))'], "
            "capture_output=True, text=True).stdout)")
    child = spawn([sys.executable, "-c", code], nice=5, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)
    assert [int(line) for line in out.split()] == [min(here + 5, 19)] * 2


def test_the_pipeline_launches_background_stages_at_the_lowest_priority(tmp_path, monkeypatch):
    """speechkd run's `launch` gives a background stage's process BACKGROUND_NICE, others none."""
    import speechkd.pipeline as pipeline_module
    from speechkd.stages import BACKGROUND_NICE

    launched = {}

    def fake_run_stages(stages, launch=None, **kwargs):
        for stage in (Stage("bg", str(tmp_path / "bg"), None, 1, parallel=True, background=True),
                      Stage("fg", str(tmp_path / "fg"), None, 2, parallel=True)):
            os.makedirs(stage.folder)
            launch(stage)
        return {}

    monkeypatch.setattr(pipeline_module, "run_stages", fake_run_stages)
    monkeypatch.setattr(pipeline_module, "spawn", lambda command, nice=0, **kwargs: launched.setdefault(
        command[command.index("--from") + 1], nice))
    pipeline_module.run("hparams/pipelines/tiny.yaml", overrides=[f"--output_folder={tmp_path / 'run'}"])
    assert launched == {"bg": BACKGROUND_NICE, "fg": 0}
