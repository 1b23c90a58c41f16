"""Stage 1 of a run: train the hierarchical VAE (from its PCA start), save it, save every case's latent code."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from modules.training.augmentation import FieldAugmenter
from modules.storage.state_files import write_atomically
from modules.config.schema import DataConfig, RunConfig
from modules.data.sweep_file import read_cases
from modules.data.datasets import scale_to_node_major
from modules.models.linear_path import fit_coefficient_pca, project_cases, spatial_pod
from modules.training.losses import physical_node_weights
from modules.data.mesh_graph import build_mesh_graph
from modules.surrogate.vae_bundle import save_vae_bundle
from modules.training.objectives import VAEObjective
from modules.training.physics_loss import PhysicsLoss
from modules.training.projected_training import (ProjectedCases, ProjectedSweep, ProjectedVAEObjective, channel_gram,
                                        physical_per_weighted, project_fields)
from modules.storage.run_directory import RunDirectory
from modules.data.scaling import SCALED_LIMIT
from modules.data.variables import channel_edges, variable_shares
from modules.training.run_log import RunLog
from modules.runtime import memory
from modules.runtime.distributed import Runtime
from modules.data.prepared_sweep import PreparedSweep
from modules.training.checkpointing import Checkpointer
from modules.training.loop import LoopSettings, Trainer, TrainingResult
from modules.models.vae import HierarchicalVAE

def loop_settings(config: RunConfig) -> LoopSettings:
    train = config.train
    return LoopSettings.for_stage(
        config, "vae", evaluate_start=config.model.linear_path,
        divergence_hint=f"lower LearningR (now {train.learning_rate:g}) or alpha (now {train.recon_weight:g}), "
                        f"or keep grad_clip on (now {train.grad_clip:g})")


def build_vae(config: RunConfig) -> HierarchicalVAE:
    torch.manual_seed(config.train.seed)
    return HierarchicalVAE(config.model, config.data.channels, config.data.timesteps)


def physical_conversion(sweep: PreparedSweep) -> Tuple[torch.Tensor, torch.Tensor]:
    """(offset, factor) per node with physical = offset + factor * scaled (the inverse of the node scaler)."""
    scaler = sweep.scaler
    offset = torch.as_tensor((scaler.data_max + scaler.data_min) / 2.0, dtype=torch.float32)
    factor = torch.as_tensor((scaler.data_max - scaler.data_min) / 2.0 / SCALED_LIMIT, dtype=torch.float32)
    return offset, factor


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


def initialise_from_pca(model: HierarchicalVAE, sweep: PreparedSweep, config: RunConfig) -> int:
    """Start the linear path at the factored PCA of the training cases: the spatial modes from (up to
    memory.LINEAR_PATH_INIT_BYTES of) evenly spread training cases, the space-time PCA of the projected fields
    from ALL training cases, read a chunk at a time (a 1 GiB subset is only ~14 cases of a 95k-node,
    200-step sweep: too few for dozens of components). Returns how many cases fixed the spatial modes."""
    data = config.data
    per_case = data.timesteps * data.channels * 4
    count = min(len(sweep.train_indices), max(2, memory.items_per_chunk(per_case, memory.LINEAR_PATH_INIT_BYTES)))
    chosen = sweep.train_indices[np.linspace(0, len(sweep.train_indices) - 1, count).round().astype(int)]
    weights = node_half_range(sweep) if config.train.physical_weighting else None

    spatial = spatial_pod(scaled_cases(sweep, chosen, data), config.model.encoder_filters[0], weights)
    chunk = memory.items_per_chunk(per_case, memory.FIELD_BATCH_BYTES)
    projected = torch.cat([project_cases(scaled_cases(sweep, indices, data), spatial, weights)
                           for indices in memory.chunks(sweep.train_indices, chunk)])
    model.initialise_linear_path(fit_coefficient_pca(projected, spatial, model.flat_latent_dim), node_weights=weights)
    return count


def project_all_cases(model: HierarchicalVAE, sweep: PreparedSweep, config: RunConfig, runtime: Runtime,
                      node_weights: torch.Tensor) -> ProjectedSweep:
    """pod_projected_training: every case through the model's frozen POD layers, in one streamed pass (see
    modules.training.projected_training). Under DDP rank 0 makes the pass and sends the result to the other ranks,
    as fit_shared_scaler does: one read of the sweep, and every rank trains on bit-identical numbers."""
    data = config.data
    channels = config.model.encoder_filters[0]
    coefficients = torch.zeros(data.num_cases, channels, data.timesteps)
    residual = torch.zeros(data.num_cases, dtype=torch.float64)
    norm_sq = torch.zeros(data.num_cases, dtype=torch.float64)
    gram = torch.zeros(channels, channels, dtype=torch.float64)
    to_physical = physical_conversion(sweep)
    if runtime.is_main:
        model.to(runtime.device)  # the trainer moves it there next anyway
        chunk = memory.items_per_chunk(data.timesteps * data.channels * 4, memory.FIELD_BATCH_BYTES)
        for indices in memory.chunks(np.arange(data.num_cases), chunk):
            fields = scaled_cases(sweep, indices, data).to(runtime.device)
            parts = project_fields(model, fields, node_weights, to_physical)
            for target, part in zip((coefficients, residual, norm_sq), parts):
                target[indices] = part.cpu()
        gram = channel_gram(model, node_weights)
    for tensor in (coefficients, residual, norm_sq, gram):
        runtime.broadcast_(tensor)
    return ProjectedSweep(coefficients, residual, norm_sq, gram, physical_per_weighted(node_weights, to_physical),
                          data.channels)


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
        variables = config.data.num_variables
        edges = torch.as_tensor(channel_edges(graph.edges, variables))
        log.info(f"VAE: physics spatial term on {graph.describe()}"
                 + (f", within each of the {variables} variables" if variables > 1 else ""))
    log.info(f"VAE: physics terms temporal {physics.temporal_weight:g}, spatial {physics.spatial_weight:g}, "
             f"conservation {physics.conservation_weight:g}"
             + (" (adaptive: each term adds weight x recon to the loss)" if physics.adaptive_weighting else ""))
    return PhysicsLoss(physics, edges, config.data.num_variables)


def train_vae(config: RunConfig, sweep: PreparedSweep, runtime: Runtime, run_dir: RunDirectory,
              log: RunLog) -> Tuple[HierarchicalVAE, TrainingResult]:
    """Train (or resume) the VAE; returns it on its best validation epoch and saves the bundle."""
    model = build_vae(config)
    log.info(f"VAE: {model.parameter_count():,} parameters; {len(sweep.train_indices)} training and "
             f"{len(sweep.val_indices)} validation cases of {config.data.window_text}; device {runtime.device}"
             + (f", {runtime.world_size} processes" if runtime.distributed else ""))
    if config.data.num_variables > 1:
        log.info(variables_note(sweep, config))
    if config.model.linear_path:
        used = initialise_from_pca(model, sweep, config)
        log.info(f"VAE: linear path starts at the PCA of {used} training cases "
                 f"({config.model.encoder_filters[0]} spatial modes, {model.flat_latent_dim} components)")
    weights = physical_node_weights(node_half_range(sweep)) if config.train.physical_weighting else None
    train_set, val_set, num_workers = sweep.train_set, sweep.val_set, config.data.num_workers
    if config.train.pod_projected_training:
        started = time.perf_counter()
        projection = project_all_cases(model, sweep, config, runtime, weights)
        objective = ProjectedVAEObjective(config.train, projection)
        coefficients = projection.coefficients.to(runtime.device)
        # filters[0] x timesteps floats per case, all in memory: DataLoader workers would only copy them.
        train_set, val_set, num_workers = (ProjectedCases(coefficients, sweep.train_indices),
                                           ProjectedCases(coefficients, sweep.val_indices), 0)
        log.info(f"VAE: pod_projected_training: {config.data.num_cases} cases projected onto "
                 f"{config.model.encoder_filters[0]} POD modes in {time.perf_counter() - started:.1f} s; training "
                 f"on [{config.model.encoder_filters[0]} x {config.data.timesteps}] instead of "
                 f"[{config.data.channels} x {config.data.timesteps}] per case")
    else:
        objective = VAEObjective(config.train, weights, physical_conversion(sweep),
                                 FieldAugmenter(config.augmentation), build_physics_loss(config, sweep, log))
    checkpoints = Checkpointer.for_stage(run_dir, "vae", config, runtime, extra_state={"scaler": sweep.scaler.state_dict()})
    trainer = Trainer(model, objective, loop_settings(config), runtime, log, checkpoints)
    if config.resume and run_dir.last_checkpoint("vae").is_file():
        trainer.resume(run_dir.last_checkpoint("vae"))
    result = trainer.fit(train_set, val_set, num_workers=num_workers)
    if runtime.is_main:
        save_vae_bundle(run_dir.vae_bundle, model, config, sweep.scaler, sweep.train_indices, sweep.val_indices,
                        sweep.coordinates, None if sweep.triangles is None else sweep.triangles.triangles)
    runtime.barrier()
    best = f"epoch {result.best_epoch + 1}" if result.best_epoch >= 0 else "the PCA start (no epoch improved on it)"
    log.info(f"VAE: best validation relative L2 error {result.best_val_loss:.4%} at {best}; "
             f"{result.samples_per_second:.1f} cases/s; saved {run_dir.vae_bundle}")
    return model, result


def save_latents(run_dir: RunDirectory, latents: Dict[str, np.ndarray], sweep: PreparedSweep) -> None:
    def write(stream: Any) -> None:
        np.savez(stream, **latents, train_indices=sweep.train_indices, val_indices=sweep.val_indices)

    write_atomically(run_dir.latents, write)


