"""Stage 1 of a run: train the hierarchical VAE, save it, encode every case, measure it against PCA."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from modules.training.augmentation import FieldAugmenter
from modules.evaluation.baselines import PCABaseline
from modules.evaluation.case_gram import CaseGram, GramPCA, accumulate_case_gram, baselines_fit_in_memory
from modules.storage.state_files import write_atomically
from modules.config.schema import DataConfig, RunConfig
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.data.datasets import scale_to_node_major
from modules.evaluation.report import relative_l2_per_case, summarize_errors
from modules.models.linear_path import fit_coefficient_pca, project_cases, spatial_pod
from modules.training.losses import physical_node_weights
from modules.data.mesh_graph import build_mesh_graph
from modules.surrogate.vae_bundle import save_vae_bundle, vae_must_match
from modules.training.objectives import VAEObjective
from modules.training.physics_loss import PhysicsLoss
from modules.training.projected_training import (ProjectedCases, ProjectedSweep, ProjectedVAEObjective, channel_gram,
                                        physical_per_weighted, project_fields)
from modules.storage.run_directory import RunDirectory
from modules.data.scaling import SCALED_LIMIT
from modules.training.run_log import RunLog
from modules.runtime.distributed import Runtime, evaluation_mode
from modules.data.prepared_sweep import PreparedSweep
from modules.training.loop import CheckpointPaths, LoopSettings, Trainer, TrainingResult
from modules.models.vae import HierarchicalVAE

# The linear path is initialised from at most this much of the training data (evenly spread cases).
LINEAR_PATH_INIT_BYTES = 1024 ** 3
# Cases read at a time when all training cases are projected onto the spatial modes, and when encoding.
PROJECTION_CHUNK_BYTES = 256 * 1024 ** 2


@dataclass
class VAEEvaluation:
    """Relative L2 errors per case (physical units) of the VAE and of PCA with as many numbers."""

    vae_train: np.ndarray
    vae_val: np.ndarray
    pca_train: np.ndarray
    pca_val: np.ndarray
    pca_components: int
    val_reconstructions: Dict[int, np.ndarray]
    """{case index: [T, N] reconstruction in physical units} of the plotted validation cases (`plotted_positions`)."""
    case_gram: Optional[CaseGram]
    """The cases' Gram matrix when the baselines were too large for memory (else None); the conditioner's
    baselines reuse it instead of reading the sweep again."""


def plotted_positions(errors: np.ndarray) -> Dict[str, int]:
    """Positions (in `errors`) of the cases worth plotting: {"median": typical case, "worst": largest error}."""
    order = np.argsort(errors)
    return {"median": int(order[len(order) // 2]), "worst": int(order[-1])}


def loop_settings(config: RunConfig) -> LoopSettings:
    train = config.train
    return LoopSettings(
        name="vae", epochs=train.epochs, batch_size=train.batch_size, learning_rate=train.learning_rate,
        weight_decay=train.weight_decay, grad_clip=train.grad_clip, lr_schedule=train.lr_schedule,
        min_lr_fraction=train.min_lr_fraction, early_stopping_patience=train.early_stopping_patience,
        checkpoint_every=train.checkpoint_every, seed=train.seed, evaluate_start=config.model.linear_path,
        divergence_hint=f"lower LearningR (now {train.learning_rate:g}) or alpha (now {train.recon_weight:g}), "
                        f"or keep grad_clip on (now {train.grad_clip:g})")


def build_vae(config: RunConfig) -> HierarchicalVAE:
    torch.manual_seed(config.train.seed)
    return HierarchicalVAE(config.model, config.data.nodes, config.data.timesteps)


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
    out = torch.empty((len(indices), data.nodes, data.timesteps), dtype=torch.float32)
    for row, index in enumerate(indices):
        out[row] = torch.from_numpy(scale_to_node_major(sweep.scaler, read_cases(sweep.array, [index], data)[0]))
    return out


def initialise_from_pca(model: HierarchicalVAE, sweep: PreparedSweep, config: RunConfig) -> int:
    """Start the linear path at the factored PCA of the training cases: the spatial modes from (up to
    LINEAR_PATH_INIT_BYTES of) evenly spread training cases, the space-time PCA of the projected fields
    from ALL training cases, read a chunk at a time (a 1 GiB subset is only ~14 cases of a 95k-node,
    200-step sweep: too few for dozens of components). Returns how many cases fixed the spatial modes."""
    data = config.data
    per_case = data.timesteps * data.nodes * 4
    count = int(min(len(sweep.train_indices), max(2, LINEAR_PATH_INIT_BYTES // per_case)))
    chosen = sweep.train_indices[np.linspace(0, len(sweep.train_indices) - 1, count).round().astype(int)]
    weights = node_half_range(sweep) if config.train.physical_weighting else None

    spatial = spatial_pod(scaled_cases(sweep, chosen, data), config.model.encoder_filters[0], weights)
    chunk = max(1, PROJECTION_CHUNK_BYTES // per_case)
    projected = torch.cat([project_cases(scaled_cases(sweep, sweep.train_indices[start:start + chunk], data),
                                         spatial, weights)
                           for start in range(0, len(sweep.train_indices), chunk)])
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
        chunk = max(1, PROJECTION_CHUNK_BYTES // (data.timesteps * data.nodes * 4))
        for indices in _batches(np.arange(data.num_cases), chunk):
            fields = scaled_cases(sweep, indices, data).to(runtime.device)
            parts = project_fields(model, fields, node_weights, to_physical)
            for target, part in zip((coefficients, residual, norm_sq), parts):
                target[indices] = part.cpu()
        gram = channel_gram(model, node_weights)
    for tensor in (coefficients, residual, norm_sq, gram):
        runtime.broadcast_(tensor)
    return ProjectedSweep(coefficients, residual, norm_sq, gram, physical_per_weighted(node_weights, to_physical),
                          data.nodes)


def build_physics_loss(config: RunConfig, sweep: PreparedSweep, log: RunLog) -> Optional[PhysicsLoss]:
    """The configured physics terms (None when every weight is 0), with the mesh's edges for the spatial term."""
    physics = config.physics
    if not physics.active:
        return None
    edges = None
    if physics.spatial_weight > 0:
        # Relative paths in condition.txt start in the working directory: the base train_run gives
        # sweep_data.load_coordinates for coordinates_path.
        graph = build_mesh_graph(physics, config.data, sweep.coordinates, Path.cwd())
        edges = torch.as_tensor(graph.edges)
        log.info(f"VAE: physics spatial term on {graph.describe()}")
    log.info(f"VAE: physics terms temporal {physics.temporal_weight:g}, spatial {physics.spatial_weight:g}, "
             f"conservation {physics.conservation_weight:g}"
             + (" (adaptive: each term adds weight x recon to the loss)" if physics.adaptive_weighting else ""))
    return PhysicsLoss(physics, edges)


def train_vae(config: RunConfig, sweep: PreparedSweep, runtime: Runtime, run_dir: RunDirectory,
              log: RunLog) -> Tuple[HierarchicalVAE, TrainingResult]:
    """Train (or resume) the VAE; returns it on its best validation epoch and saves the bundle."""
    model = build_vae(config)
    log.info(f"VAE: {model.parameter_count():,} parameters; {len(sweep.train_indices)} training and "
             f"{len(sweep.val_indices)} validation cases of {config.data.timesteps} timesteps x "
             f"{config.data.nodes} nodes; device {runtime.device}"
             + (f", {runtime.world_size} processes" if runtime.distributed else ""))
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
                 f"[{config.data.nodes} x {config.data.timesteps}] per case")
    else:
        objective = VAEObjective(config.train, weights, physical_conversion(sweep),
                                 FieldAugmenter(config.augmentation), build_physics_loss(config, sweep, log))
    trainer = Trainer(
        model, objective,
        loop_settings(config), runtime, log,
        CheckpointPaths(run_dir.last_checkpoint("vae"), run_dir.best_checkpoint("vae")),
        config_snapshot=config.to_dict(), must_match=vae_must_match(config),
        extra_state={"scaler": sweep.scaler.state_dict()})
    if config.resume and run_dir.last_checkpoint("vae").is_file():
        trainer.resume(run_dir.last_checkpoint("vae"))
    result = trainer.fit(train_set, val_set, num_workers=num_workers)
    if runtime.is_main:
        save_vae_bundle(run_dir.vae_bundle, model, config, sweep.scaler, sweep.train_indices, sweep.val_indices,
                        sweep.coordinates)
    runtime.barrier()
    best = f"epoch {result.best_epoch + 1}" if result.best_epoch >= 0 else "the PCA start (no epoch improved on it)"
    log.info(f"VAE: best validation relative L2 error {result.best_val_loss:.4%} at {best}; "
             f"{result.samples_per_second:.1f} cases/s; saved {run_dir.vae_bundle}")
    return model, result


def _batches(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start:start + size]


def reconstruct_fields(model: HierarchicalVAE, fields: np.ndarray, scaler, device: torch.device,
                       batch_size: int = 32) -> np.ndarray:
    """decode(encode(x)) with posterior means, physical units in and out: [k, T, N] float32."""
    out = np.empty(fields.shape, dtype=np.float32)
    with evaluation_mode(model):
        for chunk in _batches(np.arange(len(fields)), batch_size):
            scaled = torch.as_tensor(scaler.transform(np.asarray(fields[chunk], dtype=np.float32)))
            recon = model(scaled.transpose(1, 2).to(device), use_mean=True).recon
            out[chunk] = scaler.inverse(recon.transpose(1, 2).float().cpu().numpy())
    return out


def encode_cases(model: HierarchicalVAE, sweep_array: np.ndarray, config: RunConfig, scaler,
                 device: torch.device, batch_size: int = 32) -> Dict[str, np.ndarray]:
    """Posterior means (and log-variances) of every case, the conditioner's targets."""
    mains, hiers, flats, logvars = [], [], [], []
    batch_size = max(1, min(batch_size, PROJECTION_CHUNK_BYTES // (config.data.timesteps * config.data.nodes * 4)))
    with evaluation_mode(model):
        for chunk in _batches(np.arange(config.data.num_cases), batch_size):
            scaled = torch.as_tensor(scaler.transform(read_cases(sweep_array, chunk, config.data)))
            code = model.encode(scaled.transpose(1, 2).to(device))
            mains.append(code.main_mu.float().cpu().numpy())
            hiers.append(torch.stack(code.hier_mu, dim=1).float().cpu().numpy() if code.hier_mu
                         else np.zeros((len(chunk), 0, model.cfg.latent_dim_hier), dtype=np.float32))
            flats.append(code.flat().float().cpu().numpy())
            logvars.append(code.flat_logvar().float().cpu().numpy())
    return {"main": np.concatenate(mains), "hier": np.concatenate(hiers), "flat": np.concatenate(flats),
            "flat_logvar": np.concatenate(logvars)}


def save_latents(run_dir: RunDirectory, latents: Dict[str, np.ndarray], sweep: PreparedSweep) -> None:
    def write(stream: Any) -> None:
        np.savez(stream, **latents, train_indices=sweep.train_indices, val_indices=sweep.val_indices)

    write_atomically(run_dir.latents, write)


def fit_pca_baseline(sweep: PreparedSweep, config: RunConfig, num_components: int) -> PCABaseline:
    """PCA of the training fields held in memory (callers check case_gram.baselines_fit_in_memory first)."""
    return PCABaseline().fit(read_cases(sweep.array, sweep.train_indices, config.data), num_components)


def evaluate_vae(model: HierarchicalVAE, sweep: PreparedSweep, config: RunConfig,
                 device: torch.device) -> VAEEvaluation:
    """Relative L2 of the VAE and of PCA with as many components as the VAE has latent numbers.

    Memory stays bounded for any sweep: the VAE is measured one chunk of cases at a time, and PCA is fitted
    on the fields in memory only while they fit (case_gram.IN_MEMORY_BASELINE_BYTES), else its errors come
    from the cases' Gram matrix (one pass over the file in blocks of timesteps).
    """
    gram = None if baselines_fit_in_memory(config.data) else \
        accumulate_case_gram(sweep.array, config.data, sweep.train_indices)
    pca = fit_pca_baseline(sweep, config, model.flat_latent_dim) if gram is None else \
        GramPCA(gram, model.flat_latent_dim)
    chunk_cases = cases_per_chunk(sweep.array)
    errors: Dict[str, np.ndarray] = {}
    for split, indices in (("train", sweep.train_indices), ("val", sweep.val_indices)):
        vae_parts, pca_parts = [], []
        for chunk in _batches(indices, chunk_cases):
            truth = read_cases(sweep.array, chunk, config.data)
            vae_parts.append(relative_l2_per_case(truth, reconstruct_fields(model, truth, sweep.scaler, device)))
            if gram is None:
                pca_parts.append(relative_l2_per_case(truth, pca.reconstruct(truth)))
        errors[f"vae_{split}"] = np.concatenate(vae_parts)
        errors[f"pca_{split}"] = np.concatenate(pca_parts) if gram is None else pca.relative_errors(indices)
    # Only the plotted cases are kept (all validation reconstructions of a large sweep would not fit);
    # they are decoded again, as their positions are known only once every error is.
    plotted = [int(sweep.val_indices[position]) for position in plotted_positions(errors["vae_val"]).values()]
    recon = reconstruct_fields(model, read_cases(sweep.array, plotted, config.data), sweep.scaler, device)
    return VAEEvaluation(errors["vae_train"], errors["vae_val"], errors["pca_train"], errors["pca_val"],
                         pca.num_components, dict(zip(plotted, recon)), gram)


def vae_report_section(evaluation: VAEEvaluation, result: Optional[TrainingResult], model: HierarchicalVAE,
                       sweep: PreparedSweep) -> Dict[str, Any]:
    section: Dict[str, Any] = {
        "latent_numbers": model.flat_latent_dim,
        "pca_components": evaluation.pca_components,
        "parameters": model.parameter_count(),
        "relative_l2": {
            "vae": {"train": summarize_errors(evaluation.vae_train), "val": summarize_errors(evaluation.vae_val)},
            "pca": {"train": summarize_errors(evaluation.pca_train), "val": summarize_errors(evaluation.pca_val)},
        },
        "val_case_indices": [int(i) for i in sweep.val_indices],
    }
    if result is not None:
        section["training"] = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch + 1,
                               "best_val_loss": result.best_val_loss, "seconds": result.seconds,
                               "cases_per_second": result.samples_per_second,
                               "stopped_early": result.stopped_early,
                               # Unrounded: a tiny run's forward pass takes well under 5 ms.
                               "seconds_per_phase": dict(result.phase_seconds)}
    return section
