"""`demo_data 1`: whether the built-in demo sweep is written, where, and what a user whose own sweep is meant
is told.

The shipped condition.txt keeps `demo_data 1` and the demo's data_path, so a user who drops a sweep into
input_data/ and only edits Dim1-3 still points at the demo. The demo is written only when its file is
missing, and never when a sweep of the user's sits where the legacy lookup would find it: training on a
demo made to the user's Dims instead of their own data would be a silent substitute.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from modules.config.schema import DataConfig
from modules.data.demo_sweep import DATASET_FILE, DemoSweepSpec, ensure_demo_sweep
from modules.data.sweep_file import default_dataset_path, legacy_dataset_paths
from modules.errors import DataError


def own_sweep_fix(data: DataConfig) -> str:
    """How to train on one's own sweep instead of the demo."""
    default = f"input_data/dataset{data.data_number}.npy"
    return (f"to train on your own sweep, set data_path to its file and demo_data 0 in condition.txt, "
            f"or delete the data_path and demo_data lines to use {default}")


def ensure_demo_data(data: DataConfig, base_dir: Path) -> Optional[Path]:
    """With `demo_data 1`, write the built-in sweep where the dataset should be, if it is not there yet."""
    if not data.generate_demo:
        return None
    base_dir = Path(base_dir)
    target = base_dir / data.data_path if data.data_path else default_dataset_path(data, base_dir)
    if target.exists():
        return target
    own = next((path for path in legacy_dataset_paths(data, base_dir) if path.is_file()), None)
    if own is not None:
        shown = os.path.relpath(own, base_dir)
        raise DataError(f"demo_data 1 would write the built-in demo sweep to {target} and train on it, but your "
                        f"sweep {own} would be left unused\n"
                        f"    fix: set data_path to {shown} and demo_data 0 in condition.txt (or delete the "
                        f"data_path and demo_data lines); to make the demo anyway, move {shown} away for the run "
                        f"that writes it")
    if target.name != DATASET_FILE:
        raise DataError(f"demo_data 1 writes the demo sweep as {DATASET_FILE}, but data_path names {target.name}, "
                        f"which does not exist\n"
                        f"    fix: {own_sweep_fix(data)}; for the demo, set data_path to a folder/{DATASET_FILE}")
    grid = math.isqrt(data.num_nodes)
    if grid * grid != data.num_nodes:
        raise DataError(f"demo_data 1: {target} does not exist, so the built-in demo sweep would be written there, "
                        f"and the demo plate is square, so Dim3 must be a square number of nodes "
                        f"(e.g. 1024 = 32 x 32), got {data.num_nodes}\n"
                        f"    fix: {own_sweep_fix(data)}; for the demo, set Dim3 to a square number")
    spec = DemoSweepSpec(num_cases=data.num_cases, grid_size=grid, num_timesteps=data.num_timesteps)
    return ensure_demo_sweep(target.parent, spec)["dataset"]
