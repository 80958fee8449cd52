"""Shared fixtures: the tiny corpus, built once per test session."""

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Folder of the `numbers` tiny corpus (clean only), built once."""
    from speechkd.data.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "numbers-tiny"
    build_corpus("numbers", "tiny", out, seed=0, workers=1, progress=False)
    return str(out)


def pytest_configure(config):
    """One torch thread: two OpenMP threads beside a busy core are 10-100x slower here.

    Recipe, CLI and runtime subprocesses import this checkout's ``speechkd``
    (a script's own folder comes first on its path, so without this they would
    import whichever speechkd the virtualenv has installed, e.g. another worktree's).
    """
    import os

    import torch

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)

    torch.set_num_threads(1)
