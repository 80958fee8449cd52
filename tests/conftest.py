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
    """One torch thread: two OpenMP threads beside a busy core are 10-100x slower here."""
    import torch

    torch.set_num_threads(1)
