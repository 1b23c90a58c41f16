"""Writing the arrays users asked for, without clobbering files they already have."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modules.storage.state_files import write_atomically
from modules.errors import SimulGenError


def refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SimulGenError(f"{path} already exists and was left unchanged; pass --overwrite to replace it "
                            f"or choose another --out")


def save_array(path: Path, array: np.ndarray) -> Path:
    """np.save atomically (temp file + rename); never pickles."""
    if path.suffix != ".npy":
        raise SimulGenError(f"{path}: the output must be a .npy file (numpy array); use e.g. --out pred.npy")
    return write_atomically(path, lambda stream: np.save(stream, np.ascontiguousarray(array), allow_pickle=False))
