"""Memory: how much the machine has free, and the budgets and chunking of every pass that may not fit at once.

A pass over the sweep (or over fields it decodes) takes one chunk at a time: `items_per_chunk` sizes the
chunk from a budget below, `chunks` and `chunk_slices` walk the data in such chunks. The budgets are read
when a pass starts (as `memory.NAME`), so a test can shrink them to force several chunks.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, TypeVar

import psutil

MIB = 2 ** 20
GIB = 2 ** 30

SCAN_BYTES = 64 * MIB
"""Stored cases read at a time when the sweep is checked for NaN/Inf, scaled, fitted or measured."""
SCALE_STEP_BYTES = 16 * MIB
"""float64 working memory per step when one streamed case is scaled (a 95k-node case is 76 MB in float32)."""
FIELD_BATCH_BYTES = 256 * MIB
"""Scaled or decoded fields held at once when cases are projected on the spatial modes, encoded, or decoded
to measure the latent sensitivities."""
SPATIAL_MODES_FIT_BYTES = GIB
"""Training cases (evenly spread) whose snapshots give the VAE's spatial modes."""
NODES_PER_BLOCK = 8192
"""Nodes per block when snapshot products are formed: bounds the float64 working memory of the spatial POD."""
IN_MEMORY_BASELINE_BYTES = 2 * GIB
"""Windowed float32 fields of all cases up to this size: the classical baselines are fitted on the fields in
memory. Above it, they are computed from the cases' Gram matrix (evaluation/case_gram.py)."""
GRAM_BLOCK_BYTES = 256 * MIB
"""One float32 block (some timesteps of every case) read while the cases' Gram matrix is accumulated."""
GRAM_COLUMN_BYTES = 64 * MIB
"""The float64 working copy of a slice of such a block's columns."""
ROBUST_FIT_BYTES = GIB
"""float32 values per channel kept at once to take the robust scaler's median and MAD (exact below this)."""
LOAD_ALL_HOST_SHARE = 0.8
"""Share of the free memory --load_all=1 may fill; the rest is left to the model, its activations and the OS."""
LOAD_ALL_GPU_SHARE = 0.6
"""Share of the free GPU memory --load_all=1 may fill on CUDA (the window is then kept on the GPU)."""
CASE_CACHE_HOST_SHARE = 0.5
"""Share of the free memory at the start the cache_cases cache may fill (the page cache and the model get the rest)."""

Item = TypeVar("Item")


def items_per_chunk(bytes_per_item: int, budget_bytes: int) -> int:
    """How many items of `bytes_per_item` fit in `budget_bytes` (at least one)."""
    return max(1, int(budget_bytes) // max(1, int(bytes_per_item)))


def chunk_slices(count: int, size: int) -> Iterator[slice]:
    """slice(0, size), slice(size, 2 * size), ...: range(count) cut into consecutive pieces of at most `size`."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    """Consecutive pieces of at most `size` of a list, range, array or tensor (views where slicing gives them)."""
    for piece in chunk_slices(len(items), size):
        yield items[piece]


def available_memory_bytes() -> Optional[int]:
    """Memory the OS can still give without swapping (psutil: Linux MemAvailable, and its equivalent on
    macOS and Windows)."""
    return int(psutil.virtual_memory().available)
