"""Fixtures shared by several test files."""
from __future__ import annotations

import os

import pytest
import torch

# Under pytest-xdist (the README's test command runs 2 workers) each worker gets one core's worth of threads:
# two workers with a thread per core each would oversubscribe the cores, and the tensors here are tiny.
# OMP_NUM_THREADS carries the setting into the commands and torchrun workers the tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine extra threads only spin;
    the setting is restored for the other test files."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
