"""From condition.txt to ready-to-train datasets: find the sweep (demo_request writes the demo), check it, split
it, scale it.

Relative paths in condition.txt are read from the working directory, where
existing users keep their data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from modules.config.schema import DataConfig, RunConfig
from modules.data.case_cache import SharedCaseCache
from modules.data.sweep_file import check_finite, check_shape, open_sweep, resolve_dataset_path
from modules.data.case_split import split_cases
from modules.data.datasets import FieldDataset, require_memory_for
from modules.data.demo_request import own_sweep_fix
from modules.data.mesh_triangles import MeshTriangles, mesh_triangles
from modules.errors import DataError
from modules.runtime import memory
from modules.runtime.distributed import Runtime
from modules.data.scaling import SCALED_LIMIT, NodeScaler



@dataclass
class PreparedSweep:
    """The checked sweep, its split, the fitted scaler and the two datasets."""

    path: Path
    array: np.ndarray
    train_indices: np.ndarray
    val_indices: np.ndarray
    scaler: NodeScaler
    train_set: FieldDataset
    val_set: FieldDataset
    coordinates: Optional[np.ndarray]
    triangles: Optional[MeshTriangles]
    """The node window's triangles for mesh maps and VTU files (mesh_triangles.mesh_triangles)."""
    test_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Cases only the report measures (test_fraction / split_file); may be empty."""


def load_coordinates(data: DataConfig, base_dir: Path) -> Optional[np.ndarray]:
    """Node coordinates [nodes in the window, 2 or 3] from .npy or .csv, or None when not configured."""
    if not data.coordinates_path:
        return None
    path = base_dir / data.coordinates_path
    if not path.is_file():
        raise DataError(f"coordinates_path {path}: file not found; fix the path in condition.txt or remove the line")
    if path.suffix.lower() == ".npy":
        coordinates = np.load(path, allow_pickle=False)
    else:
        try:
            coordinates = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError as error:
            raise DataError(f"{path}: expected numbers separated by commas, one node per line ({error})") from None
    if coordinates.ndim != 2 or coordinates.shape[1] not in (2, 3) or coordinates.shape[0] != data.num_nodes:
        raise DataError(f"{path}: expected node coordinates of shape [{data.num_nodes} (Dim3), 2 or 3], "
                        f"found {list(coordinates.shape)}; export one row of x, y[, z] per node")
    if not np.isfinite(coordinates).all():
        raise DataError(f"{path}: coordinates contain NaN or Inf")
    return np.asarray(coordinates[data.node_start:data.node_stop], dtype=np.float64)


def fit_node_scaler(array: np.ndarray, train_indices: np.ndarray, data: DataConfig) -> NodeScaler:
    """The scaler `scaler` in condition.txt asks for, fitted on the training cases."""
    scaler = NodeScaler()
    if data.scaler == "robust":
        scaler.fit_robust(array, train_indices, data)
        return scaler
    return scaler.fit(array, train_indices, data)


def fit_shared_scaler(array: np.ndarray, train_indices: np.ndarray, data: DataConfig,
                      runtime: Optional[Runtime]) -> NodeScaler:
    """Fit the scaler on rank 0 only (one pass over the training cases, not one per rank) and send its
    bounds to the other ranks as tensors, so every rank scales with bit-identical numbers."""
    if runtime is None or not runtime.distributed:
        return fit_node_scaler(array, train_indices, data)
    bounds = torch.zeros(2, data.channels, dtype=torch.float64)
    if runtime.is_main:
        fitted = fit_node_scaler(array, train_indices, data).state_dict()
        bounds = torch.stack([fitted["data_min"], fitted["data_max"]])
    runtime.broadcast_(bounds)
    return NodeScaler.from_state_dict({"data_min": bounds[0], "data_max": bounds[1], "scaled_limit": SCALED_LIMIT,
                                       "clipped": data.scaler == "robust"})


def checked_scaler(array: np.ndarray, train_indices: np.ndarray, data: DataConfig, path: Path,
                   runtime: Optional[Runtime]) -> NodeScaler:
    """Refuse NaN/Inf in the window, then fit the scaler, in one pass over the training cases: NaN and Inf
    reach the min-max bounds, so finite bounds vouch for every training case and only the others are scanned
    (a large sweep is read once for both, not twice). Bounds that are not finite mean a full scan, whose
    error names the first bad value. The robust fit (medians) does not carry NaN: it is checked first."""
    if data.scaler == "robust":
        check_finite(array, data, path)
        return fit_shared_scaler(array, train_indices, data, runtime)
    scaler = fit_shared_scaler(array, train_indices, data, runtime)
    vouched = np.isfinite(scaler.data_min).all() and np.isfinite(scaler.data_max).all()
    check_finite(array, data, path, np.setdiff1d(np.arange(data.num_cases), train_indices) if vouched else None)
    return scaler


def require_room_to_load_all(data: DataConfig, path: Path, runtime: Optional[Runtime]) -> None:
    """With --load_all=1, refuse before any pass over the file or allocation when the window cannot be kept."""
    device = runtime.device if runtime is not None else torch.device("cpu")
    copies = runtime.local_world_size if runtime is not None else 1
    available = memory.available_memory_bytes()
    host_budget = None if available is None else int(available * memory.LOAD_ALL_HOST_SHARE / copies)
    gpu_budget = None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        gpu_budget = int(free * memory.LOAD_ALL_GPU_SHARE)
    require_memory_for(data.num_cases, data, path, device, host_budget, gpu_budget)


def case_caches(config: RunConfig, num_train: int, num_val: int, runtime: Optional[Runtime]
                ) -> Tuple[Optional[SharedCaseCache], Optional[SharedCaseCache]]:
    """cache_cases with --load_all=0: slots for the training cases first, then the validation cases, at most
    cache_cases and at most memory.CASE_CACHE_HOST_SHARE of the free memory (split between the processes of
    this machine: each keeps its own; its DataLoader workers share it). Only for a VAE that trains on the
    fields: training on spatial-mode coefficients reads the sweep once, with no epochs to serve."""
    data = config.data
    if data.load_all or data.cache_cases <= 0 or config.trains_on_coefficients:
        return None, None
    case_bytes = data.channels * data.timesteps * 4
    copies = runtime.local_world_size if runtime is not None else 1
    available = memory.available_memory_bytes()
    fitting = data.cache_cases if available is None else \
        int(available * memory.CASE_CACHE_HOST_SHARE / copies) // case_bytes
    slots = min(data.cache_cases, fitting)
    train_slots = min(slots, num_train)
    val_slots = min(slots - train_slots, num_val)
    shape = (data.channels, data.timesteps)
    return (SharedCaseCache(train_slots, shape, num_train) if train_slots else None,
            SharedCaseCache(val_slots, shape, num_val) if val_slots else None)


def prepare_sweep(config: RunConfig, base_dir: Path, runtime: Optional[Runtime] = None) -> PreparedSweep:
    """Check, split and scale the sweep (with `demo_data 1`, call ensure_demo_data first, on one process)."""
    data = config.data
    path = resolve_dataset_path(data, base_dir)
    if data.load_all:
        require_room_to_load_all(data, path, runtime)
    array = open_sweep(path)
    hint = (f"demo_data 1 is set: if {path} is the built-in demo sweep and you meant your own, "
            f"{own_sweep_fix(data)}") if data.generate_demo else ""
    check_shape(array, data, path, condition_file=config.condition_path, hint=hint)
    split = split_cases(data, base_dir)
    train_indices, val_indices = split.train, split.validation
    scaler = checked_scaler(array, train_indices, data, path, runtime)
    train_cache, val_cache = case_caches(config, len(train_indices), len(val_indices), runtime)
    train_set = FieldDataset(path, train_indices, data, scaler, data.load_all, array=array, cache=train_cache)
    val_set = FieldDataset(path, val_indices, data, scaler, data.load_all, array=array, cache=val_cache)
    if data.load_all and runtime is not None and runtime.device.type == "cuda":
        train_set.place_on(runtime.device)
        val_set.place_on(runtime.device)
    coordinates = load_coordinates(data, base_dir)
    return PreparedSweep(path, array, train_indices, val_indices, scaler, train_set, val_set, coordinates,
                         mesh_triangles(data, config.physics, coordinates, base_dir), split.test)
