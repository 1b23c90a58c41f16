"""Stage 1 of a run: fit the spatial modes, train the hierarchical VAE, save it and every case's projection."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from modules.config.schema import DataConfig, RunConfig
from modules.data.datasets import scale_to_node_major
from modules.data.mesh_graph import build_mesh_graph
from modules.data.prepared_sweep import PreparedSweep
from modules.data.sweep_file import read_cases
from modules.data.variables import variable_shares
from modules.models.case_pca import use_case_pca
from modules.models.spatial_basis import SpatialModes, fit_spatial_modes
from modules.models.vae import HierarchicalVAE
from modules.runtime import memory, progress
from modules.runtime.distributed import Runtime
from modules.storage.run_directory import RunDirectory
from modules.storage.state_files import write_atomically
from modules.surrogate.vae_bundle import save_vae_bundle
from modules.training.augmentation import FieldAugmenter
from modules.training.checkpointing import Checkpointer
from modules.training.loop import LoopSettings, Trainer, TrainingResult
from modules.training.time_budget import TimeBudget
from modules.training.losses import physical_node_weights
from modules.training.objectives import VAEObjective
from modules.training.physics_loss import PhysicsLoss
from modules.training import projection_cache
from modules.training.projected_training import (ProjectedCases, ProjectedSweep, ProjectedVAEObjective,
                                                 physical_per_weighted, project_fields)
from modules.training.run_log import RunLog

MAX_AUTO_SPATIAL_MODES = 256
"""spatial_modes 0 picks the modes by energy, at most this many: 256 modes left 2 % (advection) and 0.08 %
(wave) of held-out snapshots unrepresented on the development sweeps, well below the surrogate's error."""


def loop_settings(config: RunConfig) -> LoopSettings:
    train = config.train
    return LoopSettings.for_stage(
        config, "vae",
        divergence_hint=f"lower LearningR (now {train.learning_rate:g}) or alpha (now {train.recon_weight:g}), "
                        f"or keep grad_clip on (now {train.grad_clip:g})")


def physical_conversion(sweep: PreparedSweep) -> Tuple[torch.Tensor, torch.Tensor]:
    """(offset, factor) per node with physical = offset + factor * scaled (the inverse of the node scaler)."""
    offset, factor = sweep.scaler.inverse_affine()
    return torch.as_tensor(offset, dtype=torch.float32), torch.as_tensor(factor, dtype=torch.float32)


def node_half_range(sweep: PreparedSweep) -> torch.Tensor:
    return torch.as_tensor((sweep.scaler.data_max - sweep.scaler.data_min) / 2.0)


def scaled_cases(sweep: PreparedSweep, indices: np.ndarray, data: DataConfig) -> torch.Tensor:
    """Scaled cases [k, N, T] float32, scaled one case at a time with bounded temporaries."""
    out = torch.empty((len(indices), data.channels, data.timesteps), dtype=torch.float32)
    for row, index in enumerate(indices):
        out[row] = torch.from_numpy(scale_to_node_major(sweep.scaler, read_cases(sweep.array, [index], data)[0]))
    return out


def variables_note(sweep: PreparedSweep, config: RunConfig) -> str:
    """How the num_var > 1 variables share the loss and the report's error, which both weigh errors in physical
    units: a variable of small values counts little, and users should know before they read the report."""
    shares = variable_shares(node_half_range(sweep).numpy(), config.data.num_variables)
    listed = ", ".join(f"variable {index} {share:.1%}" for index, share in enumerate(shares))
    text = f"VAE: trains all {len(shares)} variables; their shares of the error in physical units: {listed}"
    if not config.train.physical_weighting:
        text += " (the loss weighs every scaled value alike: physical_weighting 0; the report uses these shares)"
    if shares.min() < 0.01:
        text += ("; a variable under 1 % is reconstructed with little care and hardly moves the report: export "
                 "the variables in comparable units to balance them")
    return text


def fit_modes(sweep: PreparedSweep, config: RunConfig) -> Tuple[SpatialModes, int]:
    """The spatial POD of (up to memory.SPATIAL_MODES_FIT_BYTES of) evenly spread training cases, cut to the
    configured count (spatial_modes, or by spatial_energy). Returns the modes and how many cases fixed them."""
    data, model = config.data, config.model
    per_case = data.timesteps * data.channels * 4
    count = min(len(sweep.train_indices), max(2, memory.items_per_chunk(per_case, memory.SPATIAL_MODES_FIT_BYTES)))
    chosen = sweep.train_indices[np.linspace(0, len(sweep.train_indices) - 1, count).round().astype(int)]
    weights = node_half_range(sweep) if config.train.physical_weighting else None
    limit = model.spatial_modes or MAX_AUTO_SPATIAL_MODES
    modes = fit_spatial_modes(scaled_cases(sweep, chosen, data), limit, weights)
    kept = model.spatial_modes or min(limit, modes.count_for(model.spatial_energy))
    # Never beyond the snapshots' rank: a zero mode would still cost coefficient error that no field shows.
    kept = max(1, min(kept, int((modes.energy > 0).sum())))
    return modes.leading(kept), count


def project_all_cases(model: HierarchicalVAE, sweep: PreparedSweep, config: RunConfig, runtime: Runtime,
                      node_weights: torch.Tensor) -> ProjectedSweep:
    """Every case through the model's frozen spatial basis, in one streamed pass (training/projected_training),
    coefficients in units of the basis scale. Under DDP rank 0 makes the pass and sends the result to the other
    ranks, as fit_shared_scaler does: one read of the sweep, and every rank trains on bit-identical numbers."""
    data = config.data
    coefficients = torch.zeros(data.num_cases, model.num_modes, data.timesteps)
    residual = torch.zeros(data.num_cases, dtype=torch.float64)
    norm_sq = torch.zeros(data.num_cases, dtype=torch.float64)
    to_physical = physical_conversion(sweep)
    if runtime.is_main:
        basis = model.basis.to(runtime.device)
        chunk = memory.items_per_chunk(data.timesteps * data.channels * 4, memory.FIELD_BATCH_BYTES)
        for indices in progress.counted(memory.chunks(np.arange(data.num_cases), chunk), data.num_cases,
                                        "VAE: projecting every case on the spatial modes"):
            fields = scaled_cases(sweep, indices, data).to(runtime.device)
            parts = project_fields(basis, fields, node_weights, to_physical)
            for target, part in zip((coefficients, residual, norm_sq), parts):
                target[indices] = part.cpu()
    for tensor in (coefficients, residual, norm_sq):
        runtime.broadcast_(tensor)
    return ProjectedSweep(coefficients, residual, norm_sq, float(model.basis.scale),
                          physical_per_weighted(node_weights, to_physical), data.channels)


def reused_projection(model: HierarchicalVAE, bundle_path: Path, sweep: PreparedSweep, config: RunConfig,
                      runtime: Runtime, log: RunLog) -> ProjectedSweep:
    """Every case's projection on a trained VAE's basis (--lc_only=1): the one its training saved beside it when
    it was made from the same data on the same modes, else a new pass over the sweep."""
    cached = None
    if not runtime.distributed:
        cached, reason = projection_cache.load_projection(
            projection_cache.cache_path(bundle_path), projection_cache.cache_key(config, sweep), sweep,
            modes=model.basis.modes)
        if cached is not None and not math.isclose(cached.projection.scale, float(model.basis.scale), rel_tol=1e-6):
            cached, reason = None, "the saved projection has another basis scale than this VAE's; projecting again"
        log.info(f"VAE: {reason}")
    if cached is not None:
        return cached.projection
    return project_all_cases(model, sweep, config, runtime, loss_node_weights(sweep, config))


def loss_node_weights(sweep: PreparedSweep, config: RunConfig) -> torch.Tensor:
    """[channels] the weight of each node's squared error: physical (range squared) or all 1."""
    if config.train.physical_weighting:
        return physical_node_weights(node_half_range(sweep))
    return torch.ones(config.data.channels)


def rescale_basis(model: HierarchicalVAE, projection: ProjectedSweep, train_indices: np.ndarray) -> ProjectedSweep:
    """Set the basis scale to the RMS of the training coefficients, so the network sees O(1) numbers."""
    coefficients = projection.coefficients
    rms = float(coefficients[torch.as_tensor(train_indices)].double().pow(2).mean().sqrt().clamp_min(1e-30))
    scale = projection.scale * rms
    with torch.no_grad():
        model.basis.scale.fill_(scale)
    return replace(projection, coefficients=coefficients / rms, scale=scale)


def build_physics_loss(config: RunConfig, sweep: PreparedSweep, log: RunLog) -> Optional[PhysicsLoss]:
    """The configured physics terms (None when every weight is 0), with the mesh's edges for the spatial term."""
    physics = config.physics
    if not physics.active:
        return None
    edges = None
    if physics.spatial_weight > 0:
        # Relative paths in condition.txt start in the working directory, as for coordinates_path
        # (prepared_sweep.load_coordinates).
        graph = build_mesh_graph(physics, config.data, sweep.coordinates, Path.cwd())
        edges = torch.as_tensor(graph.edges)
        log.info(f"VAE: physics spatial term on {graph.describe()}")
    log.info(f"VAE: physics terms temporal {physics.temporal_weight:g}, spatial {physics.spatial_weight:g}, "
             f"conservation {physics.conservation_weight:g}"
             + (" (adaptive: each term adds weight x recon to the loss)" if physics.adaptive_weighting else ""))
    return PhysicsLoss(physics, edges, config.data.num_variables)


def train_vae(config: RunConfig, sweep: PreparedSweep, runtime: Runtime, run_dir: RunDirectory, log: RunLog,
              designs: Optional[torch.Tensor] = None, budget: Optional[TimeBudget] = None,
              design_log_columns: Sequence[int] = ()) -> Tuple[HierarchicalVAE, TrainingResult, ProjectedSweep]:
    """Train (or resume) the VAE; returns it on its best validation epoch (saved as the bundle) and the
    projection of every case. designs [num_cases, D]: the design prior's features (None = no design prior);
    budget: the run's training time budget (None: every configured epoch); design_log_columns: the parameter
    columns those features read as logarithms (saved in the bundle, for a conditioner on the prior)."""
    started = time.perf_counter()
    weights = loss_node_weights(sweep, config)
    key, cache = projection_cache.cache_key(config, sweep), projection_cache.cache_path(run_dir.vae_bundle)
    cached = None
    if config.resume and not runtime.distributed:
        cached, reason = projection_cache.load_projection(cache, key, sweep)
        log.info(f"VAE: resuming: {reason}")
    modes, used = (cached.modes, cached.fitting_cases) if cached is not None else fit_modes(sweep, config)
    torch.manual_seed(config.train.seed)
    model = HierarchicalVAE(config.model, config.data.channels, config.data.timesteps, modes.modes.shape[1],
                            0 if designs is None else designs.shape[1])
    model.basis.set_modes(modes.modes.float(), node_half_range(sweep) if config.train.physical_weighting else None,
                          1.0)
    if cached is not None:
        projection = cached.projection
        with torch.no_grad():
            model.basis.scale.fill_(projection.scale)
    else:
        projection = rescale_basis(model, project_all_cases(model, sweep, config, runtime, weights),
                                   sweep.train_indices)
        if runtime.is_main:
            projection_cache.save_projection(cache, key, sweep,
                                             projection_cache.CachedProjection(modes, used, projection))
    train_coefficients = projection.coefficients[torch.as_tensor(sweep.train_indices)]
    model.set_mode_spread(train_coefficients)
    pca, reason = use_case_pca(config.model.case_pca_path, train_coefficients,
                               projection.coefficients[torch.as_tensor(sweep.val_indices)], model.layout.flat_size)
    if pca is not None:
        model.add_case_pca(pca)
        log.info(f"VAE: starts at PCA of the training cases with {pca.count} components, through a linear path "
                 f"beside the encoder and the decoder ({reason})")
    else:
        log.info(f"VAE: no PCA start ({reason})")
    held = float(modes.energy.sum() / max(modes.total_energy, 1e-300))
    log.info(f"VAE: {model.num_modes} spatial modes from {used} training cases hold {held:.5%} of their snapshots' "
             f"energy; all {config.data.num_cases} cases "
             f"{'read back' if cached is not None else 'projected'} in {time.perf_counter() - started:.1f} s")
    log.info(f"VAE: {model.parameter_count():,} parameters; {len(sweep.train_indices)} training and "
             f"{len(sweep.val_indices)} validation cases of {config.data.window_text}; device {runtime.device}"
             + (f", {runtime.world_size} processes (DDP over {runtime.backend})"
                if runtime.distributed else "")
             + ("" if designs is None else f"; design prior on {designs.shape[1]} design features"))
    if config.data.num_variables > 1:
        log.info(variables_note(sweep, config))
    energy = projection.energy_per_element(sweep.train_indices)
    if config.trains_on_coefficients:
        objective: Any = ProjectedVAEObjective(config.train, projection, designs, energy)
        coefficients = projection.coefficients.to(runtime.device)
        # modes x timesteps floats per case, all in memory: DataLoader workers would only copy them.
        train_set, val_set, num_workers = (ProjectedCases(coefficients, sweep.train_indices),
                                           ProjectedCases(coefficients, sweep.val_indices), 0)
        log.info(f"VAE: training on [{model.num_modes} modes x {config.data.timesteps} timesteps] per case "
                 f"instead of [{config.data.channels} x {config.data.timesteps}]")
    else:
        objective = VAEObjective(config.train, weights, physical_conversion(sweep),
                                 FieldAugmenter(config.augmentation), build_physics_loss(config, sweep, log),
                                 designs, energy)
        train_set, val_set, num_workers = sweep.train_set, sweep.val_set, config.data.num_workers
    checkpoints = Checkpointer.for_stage(run_dir, "vae", config, runtime,
                                         extra_state={"scaler": sweep.scaler.state_dict()})
    trainer = Trainer(model, objective, loop_settings(config), runtime, log, checkpoints,
                      math.inf if budget is None else budget.vae_allowance())
    if config.resume and run_dir.last_checkpoint("vae").is_file():
        trainer.resume(run_dir.last_checkpoint("vae"))
    result = trainer.fit(train_set, val_set, num_workers=num_workers)
    if runtime.is_main:
        save_vae_bundle(run_dir.vae_bundle, model, config, sweep.scaler, sweep.train_indices, sweep.val_indices,
                        sweep.coordinates, None if sweep.triangles is None else sweep.triangles.triangles,
                        design_log_columns)
    runtime.barrier()
    log.info(f"VAE: best validation relative L2 error {result.best_val_loss:.4%} at epoch {result.best_epoch + 1}; "
             f"{result.samples_per_second:.1f} cases/s; saved {run_dir.vae_bundle}")
    return model, result, projection


def save_latents(run_dir: RunDirectory, latents: Dict[str, np.ndarray], sweep: PreparedSweep) -> None:
    def write(stream: Any) -> None:
        np.savez(stream, **latents, train_indices=sweep.train_indices, val_indices=sweep.val_indices)

    write_atomically(run_dir.latents, write)
