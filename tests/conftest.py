"""Shared fixtures: the tiny corpus, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Folder of the `numbers` tiny corpus (clean only), built once."""
    from speechkd.data.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "numbers-tiny"
    build_corpus("numbers", "tiny", out, seed=0, workers=1, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_tdnn_teacher(tiny_corpus, tmp_path_factory):
    """A speechkd experiment folder: a tiny TDNN trained one epoch on the tiny corpus (20 ms), trained once."""
    from helpers import run_recipe, tiny_overrides

    folder = str(tmp_path_factory.mktemp("teachers") / "tdnn")
    run_recipe("ctc/train.py", "ctc/tdnn.yaml", name="tdnn", **tiny_overrides("tdnn", tiny_corpus, folder))
    return folder


def pytest_configure(config):
    """One torch thread: two OpenMP threads beside a busy core are 10-100x slower here.

    Recipe, CLI and runtime subprocesses import this checkout's ``speechkd``
    (:func:`speechkd.stages.library_env`), not another worktree's.
    """
    import os

    import torch

    from speechkd.stages import library_env

    os.environ["PYTHONPATH"] = library_env()["PYTHONPATH"]

    torch.set_num_threads(1)
