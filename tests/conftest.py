"""Shared pytest setup: nothing may reach the network, and every test starts from the same seed."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest
import torch

# The tests use small tensors, where torch's intra-op threads cost far more than they save (and thrash when
# several test processes share 2 cores).
torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One torch thread for the test, and the caller's count back after it (benchmark code may change it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_custom_pipeline_modules(monkeypatch):
    # diffusers executes every local `pipeline.py` (custom_pipeline) into one cached module, so a pipeline class
    # loaded by an earlier test would stay there beside the next one; each test starts as a new process would.
    for name in [name for name in sys.modules if "diffusers_modules" in name and name.endswith("pipeline")]:
        monkeypatch.delitem(sys.modules, name)
