"""The robust node scaler's statistics: each channel's median and MAD over the training cases (all their
used timesteps), read a chunk of cases at a time.

Exact while the training window's values fit in memory.ROBUST_FIT_BYTES; above it, from an evenly spread
subset of each training case's timesteps (every training case is represented; `RobustFit` records how many).
The scaler maps median -+ clip x 1.4826 MAD (1.4826 MAD is the standard deviation of normal data) to the
scaled limits and clips beyond. A channel whose MAD is 0 (constant on over half of its values) would be
all clipped: it falls back to the range of its sampled values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from modules.config import time_window
from modules.config.schema import DataConfig
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.runtime import memory

MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class RobustFit:
    data_min: np.ndarray
    """float64 [channels]: median - clip x 1.4826 MAD, what the scaler maps to -SCALED_LIMIT."""
    data_max: np.ndarray
    """float64 [channels]: median + clip x 1.4826 MAD."""
    timesteps_per_case: int
    """Used timesteps of each training case the statistics were taken from (all: exact)."""
    mad_fallbacks: int
    """Channels whose MAD was 0 and that were given the range of their values instead."""


def robust_bounds(array: np.ndarray, train_indices: Sequence[int], data: DataConfig, clip: float) -> RobustFit:
    train_indices = [int(i) for i in train_indices]
    rows_that_fit = memory.items_per_chunk(data.channels * 4, memory.ROBUST_FIT_BYTES)
    per_case = min(data.timesteps, max(1, rows_that_fit // len(train_indices)))
    kept = list(time_window.kept_timesteps(data.timesteps, per_case, "spread"))
    samples = np.empty((len(train_indices) * per_case, data.channels), dtype=np.float32)
    row = 0
    for chunk in memory.chunks(train_indices, cases_per_chunk(array)):
        cases = read_cases(array, chunk, data)[:, kept]
        samples[row:row + cases.shape[0] * per_case] = cases.reshape(-1, data.channels)
        row += cases.shape[0] * per_case
    low, high = samples.min(axis=0).astype(np.float64), samples.max(axis=0).astype(np.float64)
    median = np.median(samples, axis=0).astype(np.float64)
    samples -= median.astype(np.float32)  # in place: the deviations need no second copy
    np.abs(samples, out=samples)
    spread = MAD_TO_STD * np.median(samples, axis=0).astype(np.float64)
    no_mad = spread <= 0
    half_range = np.where(no_mad, (high - low) / 2.0, clip * spread)
    centre = np.where(no_mad, (high + low) / 2.0, median)
    return RobustFit(centre - half_range, centre + half_range, per_case, int(no_mad.sum()))
