"""Shared test fixtures."""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("REVERSIBLE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Point the user data folder at an empty directory, so that tests never depend on
    (or write to) data a developer downloaded; tests that need real files use ``shared_data``."""
    monkeypatch.setenv("REVERSIBLE_DATA_DIR", str(tmp_path_factory.getbasetemp() / "user-data"))


@pytest.fixture
def shared_data():
    """Path of ../shared/data (real MNIST / Omniglot); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def emu():
    """The CPU emulation of the CUDA kernels (built once per session); skips where it cannot
    be built."""
    from _gpu_import import load_gpu
    load_gpu()
    from reversible.gpu import emulate
    try:
        return emulate.backend(sms=1)
    except RuntimeError as err:
        pytest.skip(str(err))
