"""The trained models as users keep them: one self-contained file each.

The VAE bundle (`model_save/SimulGen-VAE`, the legacy path) holds the weights,
the model and data-window settings, the node scaler and the split, so
`reconstruct`, `predict` and `--lc_only=1` need nothing else. Files are state
dicts and plain values, loaded with weights_only=True.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from modules.storage.state_files import load_state, load_weights, save_state
from modules.config.schema import ModelConfig, RunConfig, config_from_dict
from modules.errors import CheckpointError
from modules.data.mesh_triangles import masked_delaunay
from modules.data.scaling import NodeScaler
from modules.models.vae import HierarchicalVAE

VAE_BUNDLE_FORMAT = "simulgenvae-vae-2"
# Version 1 held the first design (a convolutional decoder over a PCA-started linear path): not loadable now.
OLDER_FORMATS = ("simulgenvae-vae-1",)


@dataclass
class VAEBundle:
    model: HierarchicalVAE
    scaler: NodeScaler
    config: RunConfig
    train_indices: np.ndarray
    val_indices: np.ndarray
    coordinates: Optional[np.ndarray]
    """[nodes, 2 or 3] of the trained window, when the run knew them (for VTU output)."""
    triangles: Optional[np.ndarray] = None
    """[M, 3] the window's mesh triangles (data/mesh_triangles.py), when the run had them."""
    design_log_columns: Tuple[int, ...] = ()
    """The parameter columns its design prior read as logarithms (log_parameters); () in bundles written before."""


def save_vae_bundle(path: Path, model: HierarchicalVAE, config: RunConfig, scaler: NodeScaler,
                    train_indices: np.ndarray, val_indices: np.ndarray,
                    coordinates: Optional[np.ndarray] = None, triangles: Optional[np.ndarray] = None,
                    design_log_columns: Sequence[int] = ()) -> Path:
    return save_state(path, {
        "format": VAE_BUNDLE_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": dataclasses.asdict(config.model),
        "num_nodes": model.num_nodes,
        "num_timesteps": model.num_timesteps,
        "num_modes": model.num_modes,
        "design_features": model.design_features,
        "case_pca": model.case_pca,
        "time_indices": torch.as_tensor(config.data.timestep_indices, dtype=torch.int64),
        "scaler": scaler.state_dict(),
        "train_indices": torch.as_tensor(train_indices, dtype=torch.int64),
        "val_indices": torch.as_tensor(val_indices, dtype=torch.int64),
        "config": config.to_dict(),
        "coordinates": None if coordinates is None else torch.as_tensor(coordinates, dtype=torch.float64),
        "triangles": None if triangles is None else torch.as_tensor(triangles, dtype=torch.int64),
        "design_log_columns": torch.as_tensor(list(design_log_columns), dtype=torch.int64),
    })


def load_vae_bundle(path: Path, device: torch.device) -> VAEBundle:
    state = load_state(path)
    if state.get("format") in OLDER_FORMATS:
        raise CheckpointError(f"{path}: a VAE of an earlier version of this tool ({state.get('format')}), whose "
                              f"model this version no longer builds\n    fix: train it again with this version")
    if state.get("format") != VAE_BUNDLE_FORMAT:
        raise CheckpointError(f"{path}: not a SimulGenVAE VAE model (format {state.get('format')!r}); "
                              f"point --model / e2e_vae_model_path at the folder or file of a trained VAE")
    model_config = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in state["model_config"].items()})
    config = config_from_dict(state["config"])
    if state["num_nodes"] != config.data.channels:
        raise CheckpointError(f"{path}: the VAE reads {state['num_nodes']} channels, but its data window "
                              f"({config.data.window_text}) has {config.data.channels}: it was written by an earlier "
                              f"version that trained only variable 0 of num_var {config.data.num_variables}\n"
                              f"    fix: train it again; every variable is trained now")
    _require_saved_time_indices(path, state, config)
    model = HierarchicalVAE(model_config, state["num_nodes"], state["num_timesteps"], state["num_modes"],
                            state["design_features"], case_pca=bool(state.get("case_pca", False)))
    load_weights(model, state["model"], path)
    model.to(device).eval()
    coordinates = None if state.get("coordinates") is None else state["coordinates"].numpy()
    return VAEBundle(model=model, scaler=NodeScaler.from_state_dict(state["scaler"]), config=config,
                     train_indices=state["train_indices"].numpy(), val_indices=state["val_indices"].numpy(),
                     coordinates=coordinates, triangles=_saved_triangles(state, coordinates),
                     design_log_columns=_design_log_columns(state, path))


def _require_saved_time_indices(path: Path, state, config: RunConfig) -> None:
    """The stored timesteps the VAE was trained on must be those its window settings choose now (a bundle
    written before they were saved kept the first Dim2_red steps, which its settings still choose)."""
    if state.get("time_indices") is None:
        return
    saved = tuple(int(step) for step in state["time_indices"].tolist())
    if saved != config.data.timestep_indices:
        raise CheckpointError(f"{path}: the VAE was trained on stored timesteps {list(saved)}, but its settings "
                              f"(Dim2_red {config.data.timesteps}, Dim2_red_mode {config.data.timestep_mode}) now choose "
                              f"{list(config.data.timestep_indices)}: it was written by another version\n"
                              f"    fix: train it again with this version")


def _design_log_columns(state, path: Path) -> Tuple[int, ...]:
    saved = state.get("design_log_columns")
    if saved is None:
        return ()
    if not (isinstance(saved, torch.Tensor) and saved.ndim == 1 and not saved.is_floating_point()):
        raise CheckpointError(f"{path}: 'design_log_columns' is damaged (expected a 1-D integer tensor)\n"
                              f"    fix: train the VAE again to write a fresh bundle")
    return tuple(int(column) for column in saved.tolist())


def _saved_triangles(state, coordinates: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The bundle's triangles; a bundle written before they were saved gets masked Delaunay of its 2-D nodes."""
    if state.get("triangles") is not None:
        return state["triangles"].numpy()
    if coordinates is None or coordinates.shape[1] != 2:
        return None
    try:
        return masked_delaunay(coordinates)[0]
    except ValueError:
        return None  # nodes on one line: VTU files get vertices


def resolve_vae_bundle_path(path: Path) -> Path:
    """Accept the run folder or the bundle file itself."""
    from modules.storage.run_directory import RunDirectory  # local: run_directory stays free of model imports

    if path.is_dir():
        path = RunDirectory(path).vae_bundle
    if not path.is_file():
        raise CheckpointError(f"{path}: no trained VAE found there; train one first "
                              f"(python SimulGen-VAE.py --lc_only=0) or fix the path")
    return path
