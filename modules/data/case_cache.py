"""Scaled cases of a streamed dataset (--load_all=0) kept for the whole run, so later epochs do not read and
scale them again: `cache_cases N` in condition.txt.

One store in shared memory, made in the training process before the DataLoader starts its workers: every
worker reads and fills the same store, so the cache costs its bytes once, whatever num_workers is (a cache
in each worker would cost them once per worker, and would be lost with the workers at the end of every
epoch). The dataset positions 0 .. slots-1 have a slot each; a case is put there the first time it is read
and stays. No eviction, on purpose: every epoch visits every case once in a new random order, and under
that pattern a least-recently-used cache of a share s of the cases hits far less than s (simulated on
this loop's order: 16 % of reads at s = 0.5, 67 % at s = 0.9; benchmarks/case_cache.py), while cases
that stay hit exactly s. A slot is written by one worker, and is read only after its `filled` flag is set
behind the data.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


class SharedCaseCache:
    def __init__(self, slots: int, case_shape: Tuple[int, ...], num_positions: int):
        self.slots = slots
        # Shared memory is backed by pages that exist only once written: an unfilled slot costs nothing.
        self.store = torch.empty((slots,) + tuple(case_shape), dtype=torch.float32).share_memory_()
        self.filled = torch.zeros(slots, dtype=torch.bool).share_memory_()
        # Per dataset position, so workers never add to the same counter at once.
        self.reads = torch.zeros(num_positions, dtype=torch.int64).share_memory_()
        self.misses = torch.zeros(num_positions, dtype=torch.int64).share_memory_()

    @property
    def case_bytes(self) -> int:
        return self.store[0].numel() * 4 if self.slots else 0

    def get(self, position: int) -> Optional[torch.Tensor]:
        """The cached case at this dataset position, or None (counted as a read either way)."""
        self.reads[position] += 1
        if position < self.slots and bool(self.filled[position]):
            return self.store[position]
        self.misses[position] += 1
        return None

    def put(self, position: int, case: torch.Tensor) -> None:
        if position < self.slots and not bool(self.filled[position]):
            self.store[position].copy_(case)
            self.filled[position] = True

    def hit_rate(self) -> float:
        reads = int(self.reads.sum())
        return (reads - int(self.misses.sum())) / reads if reads else 0.0

    def describe(self) -> str:
        return (f"case cache: {int(self.filled.sum())} of {self.slots} slots filled "
                f"({self.slots * self.case_bytes / 2 ** 30:.2f} GiB at most), {self.hit_rate():.1%} of "
                f"{int(self.reads.sum())} reads served from it")
