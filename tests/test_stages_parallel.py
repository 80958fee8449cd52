"""Parallel stages: run in their own processes, failures name the stage."""

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
