"""Every case's projection on the spatial modes, kept beside the VAE so that it is made once per sweep.

A resumed run and `--lc_only=1` on a trained VAE need the same projection the first run made; without this file
they read and projected the whole sweep again (at the seed's size, 484 x 200 x 95,008, about 400 s and one more
read of 36.8 GB). The file is used only when it was made from the same data file (path, size, modification
time), the same window and split, the same node scaler and the same spatial modes; anything else and the
sweep is projected again, as before.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from modules.config.compatibility import VAE_DATA_FIELDS
from modules.config.schema import RunConfig
from modules.data.prepared_sweep import PreparedSweep
from modules.errors import CheckpointError
from modules.models.spatial_basis import SpatialModes
from modules.storage.state_files import differing_keys, load_state, save_state
from modules.training.projected_training import ProjectedSweep

CACHE_FORMAT = "simulgen-projection-1"
CACHE_FILE_NAME = "projection.pt"
KEY_PARTS = {"data": "data file (path, size or modification time)", "window": "data window or split",
             "modes": "spatial-mode setting"}


@dataclasses.dataclass
class CachedProjection:
    """The fitted spatial modes (as the VAE uses them), how many training cases fixed them, and the projection."""

    modes: SpatialModes
    fitting_cases: int
    projection: ProjectedSweep


def cache_path(vae_bundle: Path) -> Path:
    """The cache lives beside the VAE bundle it belongs to."""
    return Path(vae_bundle).parent / CACHE_FILE_NAME


def cache_key(config: RunConfig, sweep: PreparedSweep) -> Dict[str, Any]:
    """What the projection depends on besides the modes themselves (which the file holds and is checked on)."""
    stat = Path(sweep.path).stat()
    return {"data": {"path": str(Path(sweep.path).resolve()), "size": int(stat.st_size),
                     "mtime_ns": int(stat.st_mtime_ns)},
            "window": {name: getattr(config.data, name) for name in VAE_DATA_FIELDS},
            "modes": {"spatial_modes": config.model.spatial_modes, "spatial_energy": config.model.spatial_energy,
                      "physical_weighting": bool(config.train.physical_weighting)}}


def save_projection(path: Path, key: Dict[str, Any], sweep: PreparedSweep, cached: CachedProjection) -> None:
    projection = cached.projection
    save_state(path, {
        "format": CACHE_FORMAT, "key": key,
        "scaler_min": torch.as_tensor(sweep.scaler.data_min), "scaler_max": torch.as_tensor(sweep.scaler.data_max),
        "modes": cached.modes.modes.float(), "energy": cached.modes.energy,
        "total_energy": float(cached.modes.total_energy), "fitting_cases": int(cached.fitting_cases),
        "coefficients": projection.coefficients, "residual": projection.residual,
        "physical_norm_sq": projection.physical_norm_sq, "scale": float(projection.scale),
        "physical_per_weighted": float(projection.physical_per_weighted), "num_nodes": int(projection.num_nodes)})


def load_projection(path: Path, key: Dict[str, Any], sweep: PreparedSweep,
                    modes: Optional[torch.Tensor] = None) -> Tuple[Optional[CachedProjection], str]:
    """(the cached projection, or None; why, in words for the log). `modes` [N, C]: the basis the projection must
    have been made on (a trained VAE's), else the cached modes are taken as they are."""
    if not Path(path).is_file():
        return None, f"no projection saved at {path}"
    try:
        state = load_state(path)
    except CheckpointError as error:
        return None, f"the saved projection is unreadable ({error}); projecting again"
    if state.get("format") != CACHE_FORMAT:
        return None, f"{path} was written by another version; projecting again"
    differences = differing_keys(state["key"], key)
    if differences:
        changed = sorted({KEY_PARTS.get(difference.split(".")[0], difference) for difference in differences})
        return None, f"the saved projection was made with another {' and '.join(changed)}; projecting again"
    same_scaler = (np.array_equal(state["scaler_min"].numpy(), np.asarray(sweep.scaler.data_min))
                   and np.array_equal(state["scaler_max"].numpy(), np.asarray(sweep.scaler.data_max)))
    if not same_scaler:
        return None, "the saved projection was made with another node scaler (the data changed?); projecting again"
    if modes is not None and not torch.equal(state["modes"], modes.detach().float().cpu()):
        return None, "the saved projection was made on other spatial modes than this VAE's; projecting again"
    projection = ProjectedSweep(state["coefficients"], state["residual"], state["physical_norm_sq"],
                                float(state["scale"]), float(state["physical_per_weighted"]), int(state["num_nodes"]))
    spatial = SpatialModes(state["modes"].double(), state["energy"], float(state["total_energy"]))
    return CachedProjection(spatial, int(state["fitting_cases"]), projection), f"projection read from {path}"
