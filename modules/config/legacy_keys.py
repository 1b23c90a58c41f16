"""The legacy key names of preset.txt and condition.txt, and the one place they are mapped to RunConfig fields.

Every other module names settings by their RunConfig field ('conditioner.architecture'); `legacy_key` gives
the name the user wrote ('conditioner_type') for messages.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple


class BadValue(ValueError):
    """A value that does not have the expected type; the message says what was expected."""


def _to_int(text: str) -> int:
    try:
        number = float(text)
    except ValueError:
        raise BadValue(f"expected an integer, got '{text}'") from None
    if not number.is_integer():
        raise BadValue(f"expected an integer, got '{text}'")
    return int(number)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadValue(f"expected a number, got '{text}'") from None


def _to_flag(text: str) -> bool:
    if text in ("0", "1"):
        return text == "1"
    raise BadValue(f"expected 0 or 1, got '{text}'")


def _to_text(text: str) -> str:
    return text


def _to_optional_path(text: str) -> Optional[str]:
    return None if text.lower() in ("", "none") else text


def _to_input_type(text: str) -> str:
    lowered = text.lower()
    if lowered in ("csv", "csvs"):
        return "csv"
    if lowered == "image":
        return "image"
    raise BadValue(f"expected csvs, csv or image, got '{text}'")


def _to_float_pair(text: str) -> Tuple[float, float]:
    tokens = text.replace(",", " ").split()
    if len(tokens) != 2:
        raise BadValue(f"expected two numbers (low high), got '{text}'")
    return (_to_float(tokens[0]), _to_float(tokens[1]))


def _to_filters(text: str) -> Tuple[int, ...]:
    tokens = text.replace(",", " ").split()
    if not tokens:
        raise BadValue("expected a list of channel counts, got an empty line")
    try:
        return tuple(_to_int(token) for token in tokens)
    except BadValue:
        raise BadValue(f"expected whole numbers separated by spaces, got '{text}'") from None


# condition.txt key -> (RunConfig field path, converter). Legacy names live only here.
CONDITION_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "Dim1": ("data.num_cases", _to_int),
    "Dim2": ("data.num_timesteps", _to_int),
    "Dim3": ("data.num_nodes", _to_int),
    "num_var": ("data.num_variables", _to_int),
    "Dim2_red": ("data.num_timesteps_used", _to_int),
    "Dim2_red_mode": ("data.timestep_mode", lambda text: text.lower()),
    "Dim3_start": ("data.node_start", _to_int),
    "Dim3_end": ("data.node_end", _to_int),
    "data_path": ("data.data_path", _to_optional_path),
    "coordinates_path": ("data.coordinates_path", _to_optional_path),
    "demo_data": ("data.generate_demo", _to_flag),
    "validation_fraction": ("data.validation_fraction", _to_float),
    "split_seed": ("data.split_seed", _to_int),
    "test_fraction": ("data.test_fraction", _to_float),
    "split_file": ("data.split_file", _to_optional_path),
    "num_workers": ("data.num_workers", _to_int),
    "plot_variable": ("data.plot_variable", _to_int),
    "cache_cases": ("data.cache_cases", _to_int),
    "scaler": ("data.scaler", lambda text: text.lower()),
    "robust_clip": ("data.robust_clip", _to_float),
    "Latent_dim": ("model.latent_dim_hier", _to_int),
    "Latent_dim_end": ("model.latent_dim_main", _to_int),
    "spectral_norm": ("model.spectral_norm", _to_flag),
    "grad_checkpoint": ("model.grad_checkpoint", _to_flag),
    "spatial_modes": ("model.spatial_modes", _to_int),
    "spatial_energy": ("model.spatial_energy", _to_float),
    "decoder_width": ("model.decoder_width", _to_int),
    "decoder_depth": ("model.decoder_depth", _to_int),
    "case_pca_path": ("model.case_pca_path", _to_text),
    "design_prior": ("model.design_prior", _to_text),
    "refine_steps": ("model.refine_steps", _to_int),
    "Training_epochs": ("train.epochs", _to_int),
    "Batch_size": ("train.batch_size", _to_int),
    "LearningR": ("train.learning_rate", _to_float),
    "Loss_type": ("train.loss_type", _to_int),
    "alpha": ("train.recon_weight", _to_float),
    "Recon_iter": ("train.recon_iterations", _to_int),
    "physical_weighting": ("train.physical_weighting", _to_flag),
    "pod_projected_training": ("train.pod_projected_training", _to_flag),
    "timesteps_per_case": ("train.timesteps_per_case", _to_int),
    "design_alignment_weight": ("train.design_alignment_weight", _to_float),
    "beta_target": ("train.beta_target", _to_float),
    "beta_warmup_epochs": ("train.beta_warmup_epochs", _to_int),
    "weight_decay": ("train.weight_decay", _to_float),
    "grad_clip": ("train.grad_clip", _to_float),
    "lr_schedule": ("train.lr_schedule", _to_text),
    "min_lr_fraction": ("train.min_lr_fraction", _to_float),
    "seed": ("train.seed", _to_int),
    "device": ("train.device", _to_text),
    "amp": ("train.amp", _to_flag),
    "checkpoint_every": ("train.checkpoint_every", _to_int),
    "keep_checkpoints": ("train.keep_checkpoints", _to_int),
    "early_stopping_patience": ("train.early_stopping_patience", _to_int),
    "training_minutes": ("train.training_minutes", _to_float),
    "grad_accumulation_steps": ("train.grad_accumulation_steps", _to_int),
    "memory_warning_fraction": ("train.memory_warning_fraction", _to_float),
    "num_param": ("conditioner.num_params", _to_int),
    "param_dir": ("conditioner.param_dir", _to_text),
    "input_type": ("conditioner.input_type", _to_input_type),
    "param_data_type": ("conditioner.param_data_type", _to_text),
    "conditioner_type": ("conditioner.architecture", lambda text: text.lower()),
    "n_epoch": ("conditioner.epochs", _to_int),
    "latent_conditioner_lr": ("conditioner.learning_rate", _to_float),
    "latent_conditioner_batch": ("conditioner.batch_size", _to_int),
    "latent_conditioner_weight_decay": ("conditioner.weight_decay", _to_float),
    "latent_conditioner_dropout_rate": ("conditioner.dropout_rate", _to_float),
    "latent_conditioner_mlp_widths": ("conditioner.mlp_widths", _to_filters),
    "use_spatial_attention": ("conditioner.use_spatial_attention", _to_flag),
    "image_size": ("conditioner.image_size", _to_int),
    "image_coordinates": ("conditioner.image_coordinates", _to_flag),
    "image_features": ("conditioner.image_features", _to_text),
    "image_gray_levels": ("conditioner.image_gray_levels", _to_int),
    "lc_early_stopping_patience": ("conditioner.early_stopping_patience", _to_int),
    "use_e2e_training": ("end_to_end.enabled", _to_flag),
    "e2e_loss_function": ("end_to_end.loss_function", _to_text),
    "e2e_vae_model_path": ("end_to_end.vae_model_path", _to_text),
    "use_latent_regularization": ("end_to_end.use_latent_regularization", _to_flag),
    "LC_alpha": ("end_to_end.recon_weight", _to_float),
    "latent_reg_weight": ("end_to_end.latent_reg_weight", _to_float),
    "e2e_finetune_decoder": ("end_to_end.finetune_decoder", _to_flag),
    "e2e_decoder_start": ("end_to_end.decoder_start", _to_text),
    "reconstruction_decoder": ("end_to_end.reconstruction_decoder", _to_text),
    "conditioner_ensemble": ("conditioner.ensemble_members", _to_int),
    "pod_gp_blend": ("conditioner.pod_gp_blend", _to_text),
    "amplitude_parameter": ("conditioner.amplitude_parameter", _to_text),
    "log_parameters": ("conditioner.log_parameters", _to_text),
    "aug_time_warp_probability": ("augmentation.time_warp_probability", _to_float),
    "aug_time_warp_range": ("augmentation.time_warp_range", _to_float),
    "aug_node_mask_probability": ("augmentation.node_mask_probability", _to_float),
    "aug_node_mask_fraction": ("augmentation.node_mask_fraction", _to_float),
    "aug_noise_probability": ("augmentation.noise_probability", _to_float),
    "aug_noise_std_range": ("augmentation.noise_std_range", lambda text: _to_float_pair(text)),
    "aug_param_noise_probability": ("augmentation.param_noise_probability", _to_float),
    "aug_param_noise_std": ("augmentation.param_noise_std", _to_float),
    "aug_image_noise_probability": ("augmentation.image_noise_probability", _to_float),
    "aug_image_noise_std": ("augmentation.image_noise_std", _to_float),
    "aug_image_blur_probability": ("augmentation.image_blur_probability", _to_float),
    "aug_image_blur_sigma": ("augmentation.image_blur_sigma", _to_float),
    "image_pca_components": ("conditioner.image_pca_components", _to_int),
    "physics_temporal_weight": ("physics.temporal_weight", _to_float),
    "physics_spatial_weight": ("physics.spatial_weight", _to_float),
    "physics_conservation_weight": ("physics.conservation_weight", _to_float),
    "mesh_connectivity_path": ("physics.connectivity_path", _to_optional_path),
    "physics_neighbours": ("physics.neighbours", _to_int),
    "adaptive_loss_weighting": ("physics.adaptive_weighting", _to_flag),
}

# Legacy keys that are read and accepted but change nothing; a non-zero value gets a notice.
ACCEPTED_WITHOUT_EFFECT = {
    "RESERVED": "placeholder line of the legacy format",
    "Stretch": "legacy switch with no documented meaning; temporal warping is not implemented yet",
    "linear_path": "the PCA-started linear path of the first VAE design; the VAE now always works on spatial POD "
                   "modes (spatial_modes) and learns its decoder from scratch",
}

# Keys whose value may hold spaces (a path) or several numbers.
MULTI_VALUE_KEYS = ("param_dir", "split_file", "aug_noise_std_range", "mesh_connectivity_path")

# Keys that must appear in condition.txt: the sweep's shape cannot be guessed.
REQUIRED_CONDITION_KEYS = ("Dim1", "Dim2", "Dim3")

PRESET_FIELDS = (
    ("data_No", "data.data_number", _to_int),
    ("init_beta_divisor", "train.init_beta_divisor", _to_float),
    ("num_filter_enc", "model.encoder_filters", _to_filters),
    ("latent_conditioner_filter", "conditioner.filters", _to_filters),
)


def legacy_key(field_path: str) -> str:
    """The condition.txt or preset.txt key of a RunConfig field ('conditioner.architecture' -> 'conditioner_type');
    the field path itself for settings that have no key (command-line flags)."""
    for key, (path, _) in CONDITION_KEYS.items():
        if path == field_path:
            return key
    for key, path, _ in PRESET_FIELDS:
        if path == field_path:
            return key
    return field_path
