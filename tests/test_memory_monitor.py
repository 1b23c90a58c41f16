"""Memory readings of this process, its workers and the machine, and when they are low."""
from __future__ import annotations

import subprocess
import sys

import torch

from modules.runtime.memory_monitor import GIB, MemoryMonitor, MemoryReading


def reading(available_gib: float, total_gib: float = 16.0, **gpu) -> MemoryReading:
    return MemoryReading(process_bytes=GIB, peak_process_bytes=2 * GIB, workers_bytes=0,
                         available_bytes=int(available_gib * GIB), total_bytes=int(total_gib * GIB), **gpu)


def test_a_reading_holds_this_process_its_peak_its_children_and_the_machine():
    # The child says when its interpreter is up: read too early, it is a bare exec of a few hundred KiB.
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        found = MemoryMonitor(torch.device("cpu"), 0.1).read()
    finally:
        child.kill()
        child.wait()
    assert 0 < found.process_bytes <= found.peak_process_bytes
    assert found.workers_bytes > 1_000_000  # a Python interpreter holds megabytes
    assert 0 < found.available_bytes <= found.total_bytes
    assert found.gpu_allocated_bytes is None and "gpu" not in found.short()


def test_low_host_and_gpu_memory_are_found_under_the_fraction_and_never_with_0():
    monitor = MemoryMonitor(torch.device("cpu"), 0.1)
    assert monitor.below_threshold(reading(4.0)) == {}
    assert monitor.below_threshold(reading(1.0)) == {"host": "1.00 GiB of 16.00 GiB memory available (6%)"}
    low_gpu = reading(8.0, gpu_allocated_bytes=GIB, gpu_peak_bytes=GIB, gpu_free_bytes=GIB, gpu_total_bytes=80 * GIB)
    assert set(monitor.below_threshold(low_gpu)) == {"gpu"}
    assert MemoryMonitor(torch.device("cpu"), 0.0).below_threshold(reading(0.01)) == {}


def test_short_text_and_scalars_are_in_gib_and_mib():
    found = reading(4.0, gpu_allocated_bytes=3 * GIB, gpu_peak_bytes=4 * GIB, gpu_free_bytes=GIB,
                    gpu_total_bytes=8 * GIB)
    assert found.short() == "1.00G/peak 2.00G gpu 3.00G/peak 4.00G"
    scalars = found.scalars()
    assert scalars["memory/process_mib"] == 1024 and scalars["memory/peak_process_mib"] == 2048
    assert scalars["memory/gpu_peak_mib"] == 4096 and scalars["memory/available_mib"] == 4096
