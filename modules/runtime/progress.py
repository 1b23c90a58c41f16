"""Progress bars for the passes over a sweep that take minutes at large sizes (the NaN check and scaler fit,
the projection on the spatial modes, the report's Gram matrix and its POD + GP fit): a user of a 37 GB sweep
sees the rate and an ETA instead of a silent console.

Whether bars show is the run's choice (`--quiet`, rank 0 only), made once for the whole run with
`shown_during`, so the data and evaluation code that runs the passes needs no display argument; outside a run
(tests, predict, reconstruct) no bar is drawn.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence, TypeVar, Union

from tqdm import tqdm

Chunk = TypeVar("Chunk", bound=Union[Sequence, slice])
Item = TypeVar("Item")

_shown = False


@contextlib.contextmanager
def shown_during(enabled: bool) -> Iterator[None]:
    """Show the passes' bars inside this block when `enabled` (the previous choice comes back after it)."""
    global _shown
    previous, _shown = _shown, enabled
    try:
        yield
    finally:
        _shown = previous


def counted(chunks: Iterable[Chunk], total: int, description: str, unit: str = "case") -> Iterator[Chunk]:
    """Yield each chunk (indices or a slice: of cases, or of timesteps with unit="step") while a bar counts
    `total` of them."""
    if not _shown:
        yield from chunks
        return
    # disable=None: no bar when stderr is not a terminal (a log file), as the epochs' bars.
    with tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, leave=False, disable=None) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(chunk.stop - chunk.start if isinstance(chunk, slice) else len(chunk))


def each(items: Sequence[Item], description: str, unit: str) -> Iterator[Item]:
    """Yield each item while a bar counts them (steps that take seconds each, e.g. one Gaussian process per
    mode)."""
    if not _shown:
        yield from items
        return
    yield from tqdm(items, desc=description, unit=unit, dynamic_ncols=True, leave=False, disable=None)
