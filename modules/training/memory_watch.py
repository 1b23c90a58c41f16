"""The training loop's view of memory: a reading at most every READ_SECONDS for the progress bar, one at the
end of each epoch for the log line and TensorBoard, and a warning, at most once per epoch, when host or GPU
memory falls under memory_warning_fraction, saying what to change before the machine starts to swap."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from modules.config.legacy_keys import legacy_key
from modules.runtime.memory_monitor import MemoryMonitor, MemoryReading

READ_SECONDS = 1.0
"""Readings while an epoch runs are at least this far apart (listing the workers costs about a millisecond)."""


@dataclass(frozen=True)
class LoadingSetup:
    """What the advice can point at: the stage's batch size key and value, and how cases are loaded."""

    batch_key: str
    batch_size: int
    streamed: bool
    """The run reads cases from the file (--load_all=0) instead of holding the sweep in memory."""
    num_workers: int
    cached: bool = False
    """Streamed cases are kept in a case cache (cache_cases)."""


def advice(setup: LoadingSetup, gpu: bool) -> str:
    """What uses less memory in this run, most effective first."""
    steps = [f"lower {setup.batch_key} (now {setup.batch_size}) and raise grad_accumulation_steps to keep the "
             f"effective batch"]
    if gpu:
        steps.append("set grad_checkpoint 1 (recomputes activations instead of keeping them)")
        if not setup.streamed:
            steps.append("run with --load_all=0 so the sweep is not kept in GPU memory")
    elif not setup.streamed:
        steps.append("run with --load_all=0 to stream cases from the file instead of keeping the sweep in memory")
    elif setup.cached:
        steps.append("lower cache_cases (cached cases stay in memory)")
    if setup.num_workers > 0 and not gpu:
        steps.append(f"lower num_workers (now {setup.num_workers}; each worker holds its own batches)")
    return "; ".join(steps)


class MemoryWatch:
    def __init__(self, device: torch.device, warning_fraction: float, stage: str, section: str,
                 clock: Callable[[], float] = time.monotonic):
        self.monitor = MemoryMonitor(device, warning_fraction)
        self.stage = stage
        self.batch_key = legacy_key(f"{section}.batch_size")
        self.clock = clock
        self.latest: Optional[MemoryReading] = None
        self._read_at = -float("inf")
        self._warned_epoch = -1

    def poll(self, epoch: int, setup: LoadingSetup, warn: Callable[[str], None]) -> Optional[MemoryReading]:
        """A fresh reading when READ_SECONDS have passed since the last (else the last), warning once per epoch."""
        if self.clock() - self._read_at >= READ_SECONDS:
            self.read(epoch, setup, warn)
        return self.latest

    def read(self, epoch: int, setup: LoadingSetup, warn: Callable[[str], None]) -> MemoryReading:
        self.latest = self.monitor.read()
        self._read_at = self.clock()
        low = self.monitor.below_threshold(self.latest)
        if low and self._warned_epoch != epoch:
            self._warned_epoch = epoch
            workers = (f" and its DataLoader workers {self.latest.workers_bytes / 2 ** 30:.2f} GiB"
                       if self.latest.workers_bytes else "")
            warn(f"warning: {self.stage} epoch {epoch + 1}: memory is running low: {' and '.join(low.values())}, "
                 f"under memory_warning_fraction {self.monitor.warning_fraction:g}; this process holds "
                 f"{self.latest.process_bytes / 2 ** 30:.2f} GiB{workers}. Before the machine starts to swap: "
                 f"{advice(setup, gpu='gpu' in low and 'host' not in low)}")
        return self.latest
