"""The stage runner: skipping, fingerprints, --from/--to/--force, failures."""

import pytest

from speechkd.stages import Stage, StageFailed, run_stages


def make_stages(tmp_path, calls, config_b="b1", fail=None):
    def runner(name):
        def run():
            if name == fail:
                raise RuntimeError("boom")
            calls.append(name)

        return run

    return [
        Stage("a", str(tmp_path / "a"), runner("a"), {"x": 1}),
        Stage("b", str(tmp_path / "b"), runner("b"), config_b, after=("a",)),
        Stage("c", str(tmp_path / "c"), runner("c"), None, after=("b",)),
        Stage("d", str(tmp_path / "d"), runner("d"), None, after=("a",)),
    ]


def test_second_run_skips_everything(tmp_path):
    calls = []
    first = run_stages(make_stages(tmp_path, calls), echo=lambda line: None)
    second = run_stages(make_stages(tmp_path, calls), echo=lambda line: None)
    assert calls == ["a", "b", "c", "d"]
    assert set(first.values()) == {"done"}
    assert set(second.values()) == {"skipped"}


def test_changed_config_reruns_stage_and_dependents_only(tmp_path):
    calls = []
    run_stages(make_stages(tmp_path, calls), echo=lambda line: None)
    calls.clear()
    run_stages(make_stages(tmp_path, calls, config_b="b2"), echo=lambda line: None)
    assert calls == ["b", "c"]


def test_force_reruns_stage_and_dependents(tmp_path):
    calls = []
    run_stages(make_stages(tmp_path, calls), echo=lambda line: None)
    calls.clear()
    run_stages(make_stages(tmp_path, calls), force=["a"], echo=lambda line: None)
    assert calls == ["a", "b", "c", "d"]
    calls.clear()
    run_stages(make_stages(tmp_path, calls), force=["b"], echo=lambda line: None)
    assert calls == ["b", "c"]


def test_from_and_to(tmp_path):
    calls = []
    with pytest.raises(StageFailed, match="'a' is not done"):
        run_stages(make_stages(tmp_path, calls), start="b", echo=lambda line: None)
    status = run_stages(make_stages(tmp_path, calls), stop="b", echo=lambda line: None)
    assert calls == ["a", "b"] and status["c"] == "not run"
    with pytest.raises(ValueError, match="unknown stage 'zz'"):
        run_stages(make_stages(tmp_path, calls), start="zz", echo=lambda line: None)


def test_failure_names_stage_and_resumes_there(tmp_path):
    calls = []
    with pytest.raises(StageFailed, match="stage 'c' failed: boom") as info:
        run_stages(make_stages(tmp_path, calls, fail="c"), echo=lambda line: None)
    assert "error.txt" in str(info.value)
    assert (tmp_path / "c" / "error.txt").read_text().count("RuntimeError") >= 1
    calls.clear()
    run_stages(make_stages(tmp_path, calls), echo=lambda line: None)
    assert calls == ["c", "d"]


def test_library_env_puts_this_checkout_first_once(monkeypatch, tmp_path):
    import os

    from speechkd.stages import REPO_ROOT, library_env

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), REPO_ROOT]))
    env = library_env("plugins")
    assert env["PYTHONPATH"].split(os.pathsep) == [REPO_ROOT, "plugins", str(tmp_path)]
    assert os.path.isfile(os.path.join(REPO_ROOT, "speechkd", "stages.py"))
