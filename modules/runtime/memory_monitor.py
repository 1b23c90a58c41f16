"""Memory while training: this process's and its DataLoader workers' resident memory, its peak, what the OS
can still give, and on CUDA the GPU's; and whether that has fallen under the warning threshold.

psutil reads the same numbers on Linux, macOS and Windows (MemAvailable where Linux has it) and lists the
worker processes; /proc parsing would cover Linux only. The process's peak comes from getrusage (psutil
has no peak on Linux). Workers are forked from the training process and share its pages until they
write them, so their resident memory, summed, overstates what they add: it is shown apart.
"""
from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Dict, Optional

import psutil
import torch

GIB = 2 ** 30
MIB = 2 ** 20


def peak_resident_bytes() -> int:
    """This process's peak resident memory (ru_maxrss is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass(frozen=True)
class MemoryReading:
    process_bytes: int
    """Resident memory of this process now."""
    peak_process_bytes: int
    """The most this process has held since it started."""
    workers_bytes: int
    """Resident memory of this process's children (DataLoader workers) now, summed."""
    available_bytes: int
    """What the OS can still give without swapping (psutil's 'available')."""
    total_bytes: int
    gpu_allocated_bytes: Optional[int] = None
    gpu_peak_bytes: Optional[int] = None
    gpu_free_bytes: Optional[int] = None
    gpu_total_bytes: Optional[int] = None

    @property
    def available_fraction(self) -> float:
        return self.available_bytes / max(self.total_bytes, 1)

    @property
    def gpu_free_fraction(self) -> Optional[float]:
        if self.gpu_free_bytes is None or not self.gpu_total_bytes:
            return None
        return self.gpu_free_bytes / self.gpu_total_bytes

    def short(self) -> str:
        """'1.21G/peak 1.50G' (and ' gpu 3.10G/peak 4.00G'): the progress bar's memory entry."""
        text = f"{self.process_bytes / GIB:.2f}G/peak {self.peak_process_bytes / GIB:.2f}G"
        if self.gpu_allocated_bytes is not None:
            text += f" gpu {self.gpu_allocated_bytes / GIB:.2f}G/peak {self.gpu_peak_bytes / GIB:.2f}G"
        return text

    def scalars(self) -> Dict[str, float]:
        """TensorBoard scalars in MiB."""
        values = {"memory/process_mib": self.process_bytes / MIB, "memory/peak_process_mib": self.peak_process_bytes / MIB,
                  "memory/workers_mib": self.workers_bytes / MIB, "memory/available_mib": self.available_bytes / MIB}
        if self.gpu_allocated_bytes is not None:
            values.update({"memory/gpu_allocated_mib": self.gpu_allocated_bytes / MIB,
                           "memory/gpu_peak_mib": self.gpu_peak_bytes / MIB})
            if self.gpu_free_bytes is not None:
                values["memory/gpu_free_mib"] = self.gpu_free_bytes / MIB
        return values


class MemoryMonitor:
    """Reads memory on demand; `below_threshold` tells whether host or GPU memory is running out."""

    def __init__(self, device: torch.device, warning_fraction: float):
        self.device = device
        self.warning_fraction = warning_fraction
        self._process = psutil.Process()

    def read(self) -> MemoryReading:
        workers = 0
        for child in self._process.children(recursive=True):
            try:
                workers += child.memory_info().rss
            except psutil.Error:  # a worker that ended between the listing and the reading
                continue
        system = psutil.virtual_memory()
        gpu: Dict[str, int] = {}
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            gpu = {"gpu_allocated_bytes": torch.cuda.memory_allocated(self.device),
                   "gpu_peak_bytes": torch.cuda.max_memory_allocated(self.device),
                   "gpu_free_bytes": int(free), "gpu_total_bytes": int(total)}
        resident = self._process.memory_info().rss
        # The kernel's high-water mark can trail the current resident size by a few pages.
        return MemoryReading(process_bytes=resident, peak_process_bytes=max(resident, peak_resident_bytes()),
                             workers_bytes=workers, available_bytes=int(system.available),
                             total_bytes=int(system.total), **gpu)

    def below_threshold(self, reading: MemoryReading) -> Dict[str, str]:
        """{'host' and/or 'gpu': what is left} for the memories under warning_fraction (nothing when 0)."""
        found: Dict[str, str] = {}
        if self.warning_fraction <= 0:
            return found
        if reading.available_fraction < self.warning_fraction:
            found["host"] = (f"{reading.available_bytes / GIB:.2f} GiB of {reading.total_bytes / GIB:.2f} GiB memory "
                             f"available ({reading.available_fraction:.0%})")
        gpu_free = reading.gpu_free_fraction
        if gpu_free is not None and gpu_free < self.warning_fraction:
            found["gpu"] = (f"{reading.gpu_free_bytes / GIB:.2f} GiB of {reading.gpu_total_bytes / GIB:.2f} GiB GPU "
                            f"memory free ({gpu_free:.0%})")
        return found
