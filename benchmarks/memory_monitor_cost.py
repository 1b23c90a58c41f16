"""What the live memory monitor costs training: the time of one reading, and the share of a second it takes.

The training loop reads memory at most once per READ_SECONDS (modules/training/memory_watch.py), whatever
the batch size, so its cost is the time of one reading divided by that interval. A reading walks the
process's children (DataLoader workers) and asks the OS for free memory; on CUDA it also asks the driver.
With --workers N it starts N idle child processes first, as a DataLoader with N workers would have.

    python benchmarks/memory_monitor_cost.py [--readings 300] [--workers 2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.runtime.memory_monitor import MemoryMonitor  # noqa: E402
from modules.training.memory_watch import READ_SECONDS  # noqa: E402


def _idle(seconds: float) -> None:
    time.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="idle child processes, as DataLoader workers")
    args = parser.parse_args()
    children = [multiprocessing.Process(target=_idle, args=(60.0,)) for _ in range(args.workers)]
    for child in children:
        child.start()
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        monitor = MemoryMonitor(device, 0.1)
        monitor.read()
        started = time.perf_counter()
        for _ in range(args.readings):
            reading = monitor.read()
        seconds = (time.perf_counter() - started) / args.readings
    finally:
        for child in children:
            child.terminate()
    print(f"memory monitor on {device}, {args.workers} child processes: {seconds * 1e3:.2f} ms per reading; at most "
          f"one reading per {READ_SECONDS:g} s of training: {seconds / READ_SECONDS:.2%} of the training time "
          f"(last reading: {reading.short()})")


if __name__ == "__main__":
    main()
