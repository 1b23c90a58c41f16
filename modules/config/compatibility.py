"""The settings a saved stage depends on: resuming it, or reusing it in another run, with other values
would be wrong, so checkpoints store these and are refused when the current run's differ."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from modules.config.schema import RunConfig

# The data window and split a VAE was trained on.
VAE_DATA_FIELDS = ("num_cases", "num_timesteps", "num_nodes", "num_variables", "num_timesteps_used", "timestep_mode",
                   "node_start", "node_end", "validation_fraction", "split_seed", "test_fraction", "split_file",
                   "scaler", "robust_clip")
# Training settings that change where or how often a run writes, not what it learns (a resumed stage keeps
# the epochs the time budget, training_minutes, gave it when it started).
VAE_TRAIN_FIELDS_THAT_MAY_CHANGE = ("device", "amp", "checkpoint_every", "keep_checkpoints",
                                    "early_stopping_patience", "memory_warning_fraction", "training_minutes")
# Model settings used only when a trained VAE encodes a field (reconstruct): they change no weight, so a VAE
# trained with other values is reused and resumed as it is.
MODEL_FIELDS_THAT_MAY_CHANGE = ("refine_steps",)
# Model settings that shape a VAE's training but not what reusing it needs (--lc_only): a reused VAE carries its
# design prior or not, and a conditioner starts on it only where its inputs are what the prior reads.
MODEL_FIELDS_A_REUSED_VAE_MAY_DIFFER_IN = ("design_prior",)
# Training settings the conditioner takes from TrainConfig and learns differently with.
CONDITIONER_TRAIN_FIELDS = ("lr_schedule", "min_lr_fraction", "grad_clip", "seed", "grad_accumulation_steps")


def must_match(config: RunConfig, stage: str) -> Dict[str, Any]:
    """{section: {field: value}} a 'vae' or 'conditioner' checkpoint must share with the run that resumes or
    reuses it (a VAE reused by --lc_only=1: reused_vae_must_match)."""
    model = _binding_model_fields(dataclasses.asdict(config.model))
    # Resolved (auto -> on or off): the saved value of versions where design_prior was a 0/1 flag is a bool.
    model["design_prior"] = config.uses_design_prior
    if stage == "vae":
        window = {name: getattr(config.data, name) for name in VAE_DATA_FIELDS}
        training = {key: value for key, value in dataclasses.asdict(config.train).items()
                    if key not in VAE_TRAIN_FIELDS_THAT_MAY_CHANGE}
        return {"model": model, "data": window, "train": training}
    if stage == "conditioner":
        # The schedule it shares with the VAE: a cosine schedule's state cannot continue as a constant one.
        schedule = {name: getattr(config.train, name) for name in CONDITIONER_TRAIN_FIELDS}
        return {"conditioner": dataclasses.asdict(config.conditioner),
                "end_to_end": dataclasses.asdict(config.end_to_end), "model": model, "train": schedule}
    raise ValueError(f"must_match: unknown stage {stage!r}; stages are 'vae' and 'conditioner'")


def reused_vae_must_match(config: RunConfig) -> Dict[str, Any]:
    """The model settings a VAE reused by --lc_only=1 must share with the run that reuses it."""
    return {key: value for key, value in must_match(config, "vae")["model"].items()
            if key not in MODEL_FIELDS_A_REUSED_VAE_MAY_DIFFER_IN}


def saved_with_defaults(saved: Dict[str, Any], stage: str) -> Dict[str, Any]:
    """A checkpoint's must_match with the settings added since it was written filled in at their defaults: they
    did not exist then, and a new setting's default keeps the earlier behaviour, so the checkpoint was trained
    as with it (a run resumed after an upgrade is not refused over a key it never had). Settings that may change
    (MODEL_FIELDS_THAT_MAY_CHANGE) are dropped from what it saved."""
    if stage not in ("vae", "conditioner"):
        return saved
    filled = _filled(saved, must_match(RunConfig(), stage))
    if isinstance(filled.get("model"), dict):  # written before those settings were let change
        filled["model"] = _binding_model_fields(filled["model"])
    return filled


def _binding_model_fields(model: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in model.items() if key not in MODEL_FIELDS_THAT_MAY_CHANGE}


def _filled(saved: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _filled(out[key], value)
    return out
