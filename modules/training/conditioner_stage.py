"""Stage 2 of a run: the latent conditioner (design -> latent code), trained on the VAE's latents
or end to end through the decoder, then measured on held-out designs against POD+GP and nearest neighbour."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from modules.training.augmentation import ParameterPerturber
from modules.evaluation.baselines import NearestNeighbourBaseline, PODGaussianProcessBaseline
from modules.evaluation.case_gram import (CaseGram, GramPCA, accumulate_case_gram, baselines_fit_in_memory,
                               nearest_relative_errors, pod_gp_relative_errors)
from modules.storage.state_files import load_state, load_weights, save_state
from modules.data.design_files import InputScaler
from modules.models.conditioners import build_conditioner, count_parameters, resolve_architecture
from modules.config.schema import ConditionerConfig, RunConfig
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.data.datasets import make_split
from modules.data.designs import DesignDataset, features_for_baselines, load_design_array, scaled_inputs
from modules.errors import CheckpointError, ConfigError
from modules.data.image_pca import ImagePCA, max_components, too_many_components_issue
from modules.evaluation.report import relative_l2_per_case, summarize_errors
from modules.training.losses import physical_node_weights
from modules.training.objectives import ConditionedDecoder, ConditionerObjective, EndToEndObjective
from modules.storage.run_directory import RunDirectory
from modules.training.run_log import RunLog
from modules.runtime.distributed import Runtime, evaluation_mode
from modules.data.prepared_sweep import PreparedSweep
from modules.training.loop import CheckpointPaths, LoopSettings, Trainer, TrainingResult
from modules.models.vae import HierarchicalVAE
from modules.training.vae_stage import plotted_positions

CONDITIONER_BUNDLE_FORMAT = "simulgenvae-conditioner-1"


@dataclass
class TrainedConditioner:
    """A conditioner with everything prediction needs."""

    model: torch.nn.Module
    input_scaler: InputScaler
    input_kind: str
    in_channels: int
    latent_residual_std: torch.Tensor
    """[flat latent] std of (predicted - VAE latent) on validation designs: the sampling width of --samples."""
    decoder_weights: Optional[Dict[str, torch.Tensor]]
    """VAE weights after end-to-end fine-tuning of the decoder, else None (use the VAE bundle)."""
    image_pca: Optional[ImagePCA] = None
    """With image_pca_components > 0: the PCA of the standardised training images whose scores the MLP reads."""
    config: Optional[ConditionerConfig] = None
    """The conditioner settings it was trained with (image_size, num_params), when known."""

    def model_inputs(self, designs: np.ndarray) -> torch.Tensor:
        """Raw designs -> what the network reads (see `model_inputs`)."""
        return model_inputs(designs, self.input_scaler, self.image_pca)


def model_inputs(designs: np.ndarray, input_scaler: InputScaler, image_pca: Optional[ImagePCA]) -> torch.Tensor:
    """Standardised parameters [cases, p] or images [cases, C, S, S]; with image_pca, the whitened PCA scores
    [cases, N] of the standardised images. Training, evaluation and `predict` all go through here."""
    inputs = scaled_inputs(designs, input_scaler)
    return inputs if image_pca is None else image_pca.transform(inputs)


@dataclass
class ConditionerEvaluation:
    errors_val: np.ndarray
    errors_train: np.ndarray
    pod_gp_val: np.ndarray
    nearest_val: np.ndarray
    val_predictions: Dict[int, np.ndarray]
    """{case index: [T, N] prediction in physical units} of the plotted validation designs (`plotted_positions`)."""
    val_latents_true: np.ndarray
    val_latents_predicted: np.ndarray
    pod_modes: int


def conditioner_must_match(config: RunConfig) -> Dict[str, Any]:
    return {"conditioner": dataclasses.asdict(config.conditioner), "end_to_end": dataclasses.asdict(config.end_to_end),
            "model": dataclasses.asdict(config.model)}


def check_before_training(config: RunConfig) -> None:
    """The conditioner settings problems that can be found from the config alone (network vs input type,
    too many image PCA components for the training cases), so a run can stop before it trains the VAE."""
    resolve_architecture(config.conditioner)
    requested = config.conditioner.image_pca_components
    if requested > 0:
        data = config.data
        num_training = len(make_split(data.num_cases, data.validation_fraction, data.split_seed)[0])
        if requested > max_components(num_training):
            raise ConfigError([too_many_components_issue(requested, num_training)])


def _settings(config: RunConfig) -> LoopSettings:
    lc = config.conditioner
    return LoopSettings(
        name="conditioner", epochs=lc.epochs, batch_size=lc.batch_size, learning_rate=lc.learning_rate,
        weight_decay=lc.weight_decay, grad_clip=config.train.grad_clip, lr_schedule="cosine",
        min_lr_fraction=config.train.min_lr_fraction, early_stopping_patience=lc.early_stopping_patience,
        checkpoint_every=config.train.checkpoint_every, seed=config.train.seed,
        divergence_hint=f"lower latent_conditioner_lr (now {lc.learning_rate:g})"
                        + (f" or LC_alpha (now {config.end_to_end.recon_weight:g})" if config.end_to_end.enabled else ""))


def build(config: RunConfig, vae: HierarchicalVAE, in_channels: int) -> torch.nn.Module:
    torch.manual_seed(config.train.seed + 1)
    return build_conditioner(config.conditioner, vae.cfg.latent_dim_main, vae.cfg.latent_dim_hier,
                             vae.num_hier_levels, in_channels=in_channels, spectral_norm=config.model.spectral_norm)


def train_conditioner(config: RunConfig, sweep: PreparedSweep, vae: HierarchicalVAE, latents: Dict[str, np.ndarray],
                      runtime: Runtime, run_dir: RunDirectory, log: RunLog, base_dir: Path
                      ) -> Tuple[TrainedConditioner, TrainingResult, np.ndarray]:
    """Train on the saved latents (or end to end); returns the conditioner, its history and the raw designs."""
    check_before_training(config)
    designs = load_design_array(config.conditioner, base_dir, config.data.num_cases)
    scaler = InputScaler().fit(designs, sweep.train_indices)
    # PCA after the scaler: per-channel standardisation weighs colour channels equally before projecting.
    image_pca = (ImagePCA.fit(scaled_inputs(designs, scaler), sweep.train_indices,
                              config.conditioner.image_pca_components)
                 if config.conditioner.image_pca_components > 0 else None)
    inputs = model_inputs(designs, scaler, image_pca)
    targets = torch.as_tensor(latents["flat"], dtype=torch.float32)
    in_channels = designs.shape[1] if designs.ndim == 4 else 1
    conditioner = build(config, vae, in_channels)
    e2e = config.end_to_end.enabled
    node_weights = (physical_node_weights(torch.as_tensor((sweep.scaler.data_max - sweep.scaler.data_min) / 2))
                    if config.train.physical_weighting else None)
    train_set = DesignDataset(inputs, targets, sweep.train_indices, sweep.train_set if e2e else None)
    val_set = DesignDataset(inputs, targets, sweep.val_indices, sweep.val_set if e2e else None)
    if e2e:
        model: torch.nn.Module = ConditionedDecoder(conditioner, vae, config.end_to_end.finetune_decoder)
        objective: Any = EndToEndObjective(config.end_to_end, node_weights)
    else:
        weights = field_sensitivity(vae, targets[torch.as_tensor(sweep.train_indices)], node_weights)
        model, objective = conditioner, ConditionerObjective(weights, ParameterPerturber(config.augmentation))
    mode = "end-to-end through the decoder" if e2e else "on the VAE's latent vectors"
    projected = ("" if image_pca is None else f" projected onto {image_pca.num_components} whitened PCA components "
                 f"({image_pca.variance_explained:.1%} of the training images' variance)")
    log.info(f"conditioner: {resolve_architecture(config.conditioner)} with {count_parameters(conditioner):,} "
             f"parameters, {config.conditioner.input_type} input {list(designs.shape[1:])}{projected}, trained {mode}")
    trainer = Trainer(model, objective, _settings(config), runtime, log,
                      CheckpointPaths(run_dir.last_checkpoint("conditioner"), run_dir.best_checkpoint("conditioner")),
                      config_snapshot=config.to_dict(), must_match=conditioner_must_match(config))
    if config.resume and run_dir.last_checkpoint("conditioner").is_file():
        trainer.resume(run_dir.last_checkpoint("conditioner"))
    result = trainer.fit(train_set, val_set, num_workers=0)
    conditioner.eval()
    residual = _latent_residual_std(conditioner, inputs[sweep.val_indices], targets[sweep.val_indices],
                                    runtime.device)
    decoder_weights = ({k: v.detach().cpu() for k, v in vae.state_dict().items()}
                       if e2e and config.end_to_end.finetune_decoder else None)
    trained = TrainedConditioner(conditioner, scaler, config.conditioner.input_type, in_channels, residual,
                                 decoder_weights, image_pca, config.conditioner)
    if runtime.is_main:
        save_conditioner_bundle(run_dir.conditioner_bundle, trained, config, vae)
    runtime.barrier()
    log.info(f"conditioner: best validation loss {result.best_val_loss:.4g} at epoch {result.best_epoch + 1}; "
             f"saved {run_dir.conditioner_bundle}")
    return trained, result, designs


# Decoded fields held at once while the latent sensitivities are measured.
SENSITIVITY_BATCH_BYTES = 256 * 2**20


@torch.no_grad()
def field_sensitivity(vae: HierarchicalVAE, train_latents: torch.Tensor,
                      node_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """[flat latent] how strongly each latent number moves the decoded field (squared, in the physical
    metric), normalised to mean 1: a latent error the decoder ignores should cost the conditioner little.

    Finite differences of one standard deviation around the mean training latent, one batched decode."""
    vae.eval()
    device = next(vae.parameters()).device
    mean, spread = train_latents.mean(dim=0), train_latents.std(dim=0).clamp_min(1e-6)
    steps = torch.diag(spread)
    latents = (mean[None] + steps).to(device)
    base = vae.decode_flat(mean[None].to(device)).float()  # [1, N, T]
    # Decoded a few at a time: at 95k nodes x 200 steps each field is 76 MB.
    per_batch = max(1, SENSITIVITY_BATCH_BYTES // (base.numel() * 4))
    parts = []
    for start in range(0, len(latents), per_batch):
        change = (vae.decode_flat(latents[start:start + per_batch]).float() - base) ** 2
        if node_weights is not None:
            change = change * node_weights.to(device)[None, :, None]
        parts.append(change.sum(dim=(1, 2)).cpu())
    sensitivity = torch.cat(parts) / spread.cpu() ** 2
    return (sensitivity / sensitivity.mean().clamp_min(1e-30)).clamp_min(1e-3)


def predict_latents(conditioner: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
                    batch_size: int = 256) -> torch.Tensor:
    outputs = []
    with evaluation_mode(conditioner):
        for start in range(0, len(inputs), batch_size):
            outputs.append(conditioner(inputs[start:start + batch_size].to(device)).flat().float().cpu())
    return torch.cat(outputs)


def _latent_residual_std(conditioner, inputs, targets, device) -> torch.Tensor:
    predicted = predict_latents(conditioner, inputs, device)
    return (predicted - targets).std(dim=0, unbiased=len(targets) > 1).clamp_min(1e-6)


def decode_to_physical(vae: HierarchicalVAE, flat: torch.Tensor, scaler, device: torch.device,
                       batch_size: int = 64) -> np.ndarray:
    """Flat latent codes -> fields [k, T, N] float32 in physical units."""
    parts = []
    with evaluation_mode(vae):
        for start in range(0, len(flat), batch_size):
            scaled = vae.decode_flat(flat[start:start + batch_size].to(device)).transpose(1, 2).float().cpu().numpy()
            parts.append(np.asarray(scaler.inverse(scaled), dtype=np.float32))
    return np.concatenate(parts) if parts else np.empty((0, vae.num_timesteps, vae.num_nodes), np.float32)


def evaluate_conditioner(trained: TrainedConditioner, vae: HierarchicalVAE, designs: np.ndarray,
                         latents: Dict[str, np.ndarray], sweep: PreparedSweep, config: RunConfig,
                         device: torch.device, case_gram: Optional[CaseGram] = None) -> ConditionerEvaluation:
    """Held-out error of conditioner + decoder in physical units, beside POD+GP and nearest neighbour.

    Memory stays bounded for any sweep: predictions are decoded and measured one chunk of cases at a time, and
    the baselines hold the fields only while they fit (case_gram.baselines_fit_in_memory); otherwise their
    errors come from `case_gram` (the cases' Gram matrix, from evaluate_vae) or one made here.
    """
    inputs = trained.model_inputs(designs)
    chunk_cases = cases_per_chunk(sweep.array)
    errors, predicted_latents = {}, {}
    for split, indices in (("train", sweep.train_indices), ("val", sweep.val_indices)):
        flat = predict_latents(trained.model, inputs[indices], device)
        parts = []
        for start in range(0, len(indices), chunk_cases):
            predicted = decode_to_physical(vae, flat[start:start + chunk_cases], sweep.scaler, device)
            truth = read_cases(sweep.array, indices[start:start + chunk_cases], config.data)
            parts.append(relative_l2_per_case(truth, predicted))
        errors[split], predicted_latents[split] = np.concatenate(parts), flat
    positions = list(plotted_positions(errors["val"]).values())
    plotted = decode_to_physical(vae, predicted_latents["val"][positions], sweep.scaler, device)
    features = features_for_baselines(designs)
    if case_gram is None and baselines_fit_in_memory(config.data):
        train_fields = read_cases(sweep.array, sweep.train_indices, config.data)
        val_truth = read_cases(sweep.array, sweep.val_indices, config.data)
        pod_gp = PODGaussianProcessBaseline().fit(features[sweep.train_indices], train_fields, vae.flat_latent_dim)
        nearest = NearestNeighbourBaseline().fit(features[sweep.train_indices], train_fields)
        pod_gp_val = relative_l2_per_case(val_truth, pod_gp.predict(features[sweep.val_indices]))
        nearest_val = relative_l2_per_case(val_truth, nearest.predict(features[sweep.val_indices]))
        pod_modes = pod_gp.num_modes
    else:
        gram = case_gram if case_gram is not None else \
            accumulate_case_gram(sweep.array, config.data, sweep.train_indices)
        pod = GramPCA(gram, vae.flat_latent_dim)
        pod_gp_val = pod_gp_relative_errors(pod, features, sweep.val_indices)
        nearest_val = nearest_relative_errors(gram, features, sweep.val_indices)
        pod_modes = pod.num_components
    return ConditionerEvaluation(
        errors_val=errors["val"], errors_train=errors["train"], pod_gp_val=pod_gp_val, nearest_val=nearest_val,
        val_predictions={int(sweep.val_indices[position]): field for position, field in zip(positions, plotted)},
        val_latents_true=latents["flat"][sweep.val_indices],
        val_latents_predicted=predicted_latents["val"].numpy(), pod_modes=pod_modes)


def conditioner_report_section(evaluation: ConditionerEvaluation, result: Optional[TrainingResult],
                               config: RunConfig, trained: TrainedConditioner) -> Dict[str, Any]:
    section: Dict[str, Any] = {
        "architecture": resolve_architecture(config.conditioner),
        "input_type": config.conditioner.input_type,
        "end_to_end": config.end_to_end.enabled,
        "parameters": count_parameters(trained.model),
        "pod_gp_modes": evaluation.pod_modes,
        "image_pca_components": 0 if trained.image_pca is None else trained.image_pca.num_components,
        "prediction_relative_l2": {
            "conditioner": {"train": summarize_errors(evaluation.errors_train),
                            "val": summarize_errors(evaluation.errors_val)},
            "pod_gp": {"val": summarize_errors(evaluation.pod_gp_val)},
            "nearest_neighbour": {"val": summarize_errors(evaluation.nearest_val)},
        },
    }
    if trained.image_pca is not None:
        section["image_pca_variance_explained"] = trained.image_pca.variance_explained
    if result is not None:
        section["training"] = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch + 1,
                               "best_val_loss": result.best_val_loss, "seconds": result.seconds,
                               "stopped_early": result.stopped_early,
                               "seconds_per_phase": dict(result.phase_seconds)}
    return section


def save_conditioner_bundle(path: Path, trained: TrainedConditioner, config: RunConfig, vae: HierarchicalVAE) -> Path:
    state: Dict[str, Any] = {
        "format": CONDITIONER_BUNDLE_FORMAT,
        "model": {k: v.detach().cpu() for k, v in trained.model.state_dict().items()},
        "conditioner_config": dataclasses.asdict(config.conditioner),
        "spectral_norm": config.model.spectral_norm,
        "latent_dims": [vae.cfg.latent_dim_main, vae.cfg.latent_dim_hier, vae.num_hier_levels],
        "input_kind": trained.input_kind,
        "in_channels": trained.in_channels,
        "input_scaler": trained.input_scaler.state_dict(),
        "latent_residual_std": trained.latent_residual_std,
        "seed": config.train.seed,
    }
    if trained.decoder_weights is not None:
        state["vae_weights"] = trained.decoder_weights
    if trained.image_pca is not None:
        state["image_pca"] = trained.image_pca.state_dict()
    return save_state(path, state)


def load_conditioner_bundle(path: Path, device: torch.device) -> TrainedConditioner:
    state = load_state(path)
    if state.get("format") != CONDITIONER_BUNDLE_FORMAT:
        raise CheckpointError(f"{path}: not a SimulGenVAE latent conditioner (format {state.get('format')!r})")
    cfg = ConditionerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["conditioner_config"].items()})
    latent_dim_main, latent_dim_hier, levels = state["latent_dims"]
    model = build_conditioner(cfg, latent_dim_main, latent_dim_hier, levels, in_channels=state["in_channels"],
                              spectral_norm=state["spectral_norm"])
    load_weights(model, state["model"], path)
    model.to(device).eval()
    # Bundles written before image PCA existed have neither the key nor the setting: they load as before.
    image_pca = ImagePCA.from_state_dict(state["image_pca"]) if "image_pca" in state else None
    found = 0 if image_pca is None else image_pca.num_components
    if found != cfg.image_pca_components:
        raise CheckpointError(f"{path}: the conditioner was trained with image_pca_components "
                              f"{cfg.image_pca_components} but the bundle holds {found} PCA components; "
                              f"the file is damaged or was edited, retrain the conditioner")
    return TrainedConditioner(model, InputScaler.from_state_dict(state["input_scaler"]), state["input_kind"],
                              state["in_channels"], state["latent_residual_std"], state.get("vae_weights"),
                              image_pca, cfg)
