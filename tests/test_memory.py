"""The one chunking helper every bounded-memory pass uses."""
from __future__ import annotations

import numpy as np
import torch

from modules.runtime import memory


def test_items_per_chunk_is_what_fits_and_at_least_one():
    assert memory.items_per_chunk(10, 95) == 9
    assert memory.items_per_chunk(10, 5) == 1
    assert memory.items_per_chunk(0, 5) == 5


def test_chunk_slices_cover_the_range_once_in_order():
    assert list(memory.chunk_slices(7, 3)) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert list(memory.chunk_slices(0, 3)) == []


def test_chunks_of_lists_arrays_tensors_and_ranges_keep_their_type():
    assert list(memory.chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    pieces = list(memory.chunks(np.arange(5), 4))
    assert [piece.tolist() for piece in pieces] == [[0, 1, 2, 3], [4]] and pieces[0].base is not None  # views
    assert [piece.tolist() for piece in memory.chunks(torch.arange(5), 3)] == [[0, 1, 2], [3, 4]]
    assert list(memory.chunks(range(10, 15), 2)) == [range(10, 12), range(12, 14), range(14, 15)]
