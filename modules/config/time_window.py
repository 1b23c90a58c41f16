"""Which stored timesteps a Dim2_red window keeps: the first ones, or ones spread over the whole transient."""
from __future__ import annotations

from typing import Sequence, Tuple


def kept_timesteps(num_timesteps: int, kept: int, mode: str) -> Tuple[int, ...]:
    """`kept` of the `num_timesteps` stored steps, increasing: 'first' -> 0 .. kept-1; 'spread' -> the nearest
    integers to kept evenly spaced points from 0 to num_timesteps - 1, so the first and the last step are
    always kept and no step twice (spacing >= 1 when kept <= num_timesteps). Exact integer arithmetic,
    halves rounded up, so the choice is the same on every machine."""
    if mode == "first" or kept >= num_timesteps or kept < 2:
        return tuple(range(min(kept, num_timesteps)))
    last, intervals = num_timesteps - 1, kept - 1
    return tuple((2 * i * last + intervals) // (2 * intervals) for i in range(kept))


def listed(steps: Sequence[int]) -> str:
    """'0, 4, 9, 13, ..., 39' (at most four, then the last)."""
    shown = [str(step) for step in steps] if len(steps) <= 5 else [str(s) for s in steps[:4]] + ["...", str(steps[-1])]
    return ", ".join(shown)


def describe(num_timesteps: int, steps: Sequence[int]) -> str:
    """What the timesteps of an output stand for, for the lines predict and reconstruct print."""
    if tuple(steps) == tuple(range(num_timesteps)):
        return f"timesteps are the sweep's {num_timesteps} stored timesteps"
    return f"timesteps stand for stored timesteps {listed(steps)} (0-based) of the sweep's {num_timesteps}"
