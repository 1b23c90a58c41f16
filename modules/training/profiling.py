"""Where the training time and memory go, summarised at the end of every training stage.

`StepTimer` accumulates wall time per phase (waiting for data, forward, backward, optimizer step,
validation and checkpoints); `summarize` turns it into a few lines with a concrete recommendation when one
phase dominates. On CUDA the timer synchronises the device at phase boundaries, so GPU work is charged to
the phase that queued it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator, List

import torch

from modules.runtime.memory_monitor import peak_resident_bytes

PHASES = ("data", "forward", "backward", "optimizer", "validation+checkpoints")


class StepTimer:
    """Wall seconds per phase; use `with timer.phase("forward"): ...`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: Dict[str, float] = {name: 0.0 for name in PHASES}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._synchronise()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._synchronise()
            self.seconds[name] += time.perf_counter() - started

    def _synchronise(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def summarize(stage: str, timer: StepTimer, cases_per_second: float, loading_in_memory: bool) -> List[str]:
    """Lines for the log: throughput, memory, the time split and what to change when one part dominates."""
    total = sum(timer.seconds.values())
    lines = [f"{stage} profile: {cases_per_second:.1f} cases/s; peak CPU memory {peak_resident_bytes() / 2 ** 20:.0f} MiB"
             + (f"; peak GPU memory {torch.cuda.max_memory_allocated(timer.device) / 2 ** 20:.0f} MiB"
                if timer.device.type == "cuda" else "")]
    if total <= 0:
        return lines
    shares = {name: seconds / total for name, seconds in timer.seconds.items()}
    lines.append("  time: " + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()))
    if shares["data"] > 0.2:
        lines.append("  data loading takes over a fifth of the time: "
                     + ("raise num_workers in condition.txt to read cases in parallel, or use --load_all=1"
                        if not loading_in_memory else "raise num_workers in condition.txt"))
    if shares["validation+checkpoints"] > 0.3:
        lines.append("  validation and checkpoints take over 30 %: raise checkpoint_every in condition.txt")
    if shares["forward"] + shares["backward"] > 0.7 and timer.device.type == "cpu":
        lines.append("  the network itself dominates on the CPU: a GPU (--device=cuda) or smaller filters in "
                     "preset.txt are what would make this faster")
    if shares["optimizer"] > 0.3:
        lines.append("  the optimizer step takes over 30 %: the model is large for its batch; a larger Batch_size "
                     "amortises it")
    return lines
