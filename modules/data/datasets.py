"""The train/validation split and the Dataset that serves scaled cases to the VAE.

Datasets only index arrays: they return CPU tensors and never choose a device;
the training loop moves batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from modules.config.schema import DataConfig
from modules.data.case_cache import SharedCaseCache
from modules.data.sweep_file import cases_per_chunk, open_sweep, read_cases, windowed_case
from modules.errors import DataError
from modules.runtime import memory
from modules.data.scaling import NodeScaler



def require_memory_for(num_cases: int, data: DataConfig, path: Path, device: torch.device,
                       host_budget_bytes: Optional[int], device_budget_bytes: Optional[int] = None) -> None:
    """Refuse --load_all=1, before anything is allocated, when the window of `num_cases` cases cannot
    be held: in host memory always, and in GPU memory too when it is to be kept there (CUDA)."""
    needed = num_cases * data.channels * data.timesteps * 4
    shape = f"{num_cases} cases x {data.window_text} of {path}"
    fix = ("    fix: run with --load_all=0 to stream cases from the memory-mapped file "
           "(or narrow the window with Dim2_red / Dim3_start / Dim3_end)")
    if host_budget_bytes is not None and needed > host_budget_bytes:
        raise DataError(f"keeping {shape} in memory needs {needed / memory.GIB:.2f} GiB, but only "
                        f"{host_budget_bytes / memory.GIB:.2f} GiB of memory can be used for it\n{fix}")
    if device.type == "cuda" and device_budget_bytes is not None and needed > device_budget_bytes:
        raise DataError(f"keeping {shape} in GPU memory ({device}) needs {needed / memory.GIB:.2f} GiB, but only "
                        f"{device_budget_bytes / memory.GIB:.2f} GiB of it is free beside the model\n{fix}")


def scale_to_node_major(scaler: NodeScaler, case: np.ndarray) -> np.ndarray:
    """One case [T, N] -> scaled float32 [N, T] (the VAE's layout), a few timesteps at a time: the scaler
    works in float64, and a whole 95k-node case would otherwise need several case-sized temporaries."""
    num_timesteps, num_nodes = case.shape
    scaled = np.empty((num_nodes, num_timesteps), dtype=np.float32)
    steps_per_chunk = memory.items_per_chunk(num_nodes * 8, memory.SCALE_STEP_BYTES)
    for steps in memory.chunk_slices(num_timesteps, steps_per_chunk):
        scaled[:, steps] = scaler.transform(case[steps]).T
    return scaled


class FieldDataset(Dataset):
    """Scaled cases of the sweep as float32 [channels, num_timesteps] tensors (the VAE's layout; channels are
    the nodes, or with num_var > 1 each node's variables).

    Item i is (field, case_index) for the i-th of `case_indices`. With load_all the
    window of all those cases is scaled once into one tensor (which `place_on` may move
    to the GPU); otherwise each item is read from the file on access. A streamed dataset
    pickles without its memory map and reopens the file by path, so DataLoader workers can use it;
    a streamed dataset's `cache` (cache_cases) keeps cases after their first read, in shared memory.
    """

    def __init__(self, path: Path, case_indices: Sequence[int], data: DataConfig, scaler: NodeScaler,
                 load_all: bool, array: Optional[np.ndarray] = None, cache: Optional[SharedCaseCache] = None):
        self.path = Path(path)
        self.case_indices = np.asarray(case_indices, dtype=np.int64)
        self.data = data
        self.scaler = scaler
        self.load_all = load_all
        self._array = array if array is not None else open_sweep(self.path)
        self._fields: Optional[torch.Tensor] = None
        self.cache = None if load_all else cache  # streamed cases only; shared by the DataLoader workers
        if load_all:  # prepare_sweep checked that the window fits (require_memory_for) before any read
            self._fields = self._load_all()
            self._array = None  # the window is in memory; the file is no longer needed

    def _load_all(self) -> torch.Tensor:
        num_cases = len(self.case_indices)
        fields = torch.empty((num_cases, self.data.channels, self.data.timesteps), dtype=torch.float32)
        for rows in memory.chunk_slices(num_cases, cases_per_chunk(self._array)):
            cases = read_cases(self._array, self.case_indices[rows], self.data)
            fields[rows] = torch.from_numpy(self.scaler.transform(cases)).transpose(1, 2)
        return fields

    @property
    def device(self) -> torch.device:
        """Where items are served from: the in-memory tensor's device, else the CPU."""
        return self._fields.device if self._fields is not None else torch.device("cpu")

    def place_on(self, device: torch.device) -> None:
        """Keep the in-memory window on `device` (e.g. the GPU, so batches need no host-to-device copy)."""
        if self._fields is not None:
            self._fields = self._fields.to(device)

    def __len__(self) -> int:
        return len(self.case_indices)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        case_index = int(self.case_indices[i])
        if self._fields is not None:
            return self._fields[i], case_index
        if self.cache is not None:
            cached = self.cache.get(i)
            if cached is not None:
                return cached, case_index
        if self._array is None:
            self._array = open_sweep(self.path)  # first access in a DataLoader worker
        case = windowed_case(self._array, case_index, self.data)  # [T, N]
        field = torch.from_numpy(scale_to_node_major(self.scaler, case))
        if self.cache is not None:
            self.cache.put(i, field)
        return field, case_index

    def loading_note(self) -> Optional[str]:
        """What the training loop reports about loading this dataset at the end of a stage."""
        return None if self.cache is None else self.cache.describe()

    def __getstate__(self):
        state = self.__dict__.copy()
        # A memory map would be pickled as a full in-memory copy; workers reopen the file instead.
        if isinstance(state["_array"], np.memmap):
            state["_array"] = None
        return state
