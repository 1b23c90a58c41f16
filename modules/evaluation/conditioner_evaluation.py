"""How well conditioner + decoder predict held-out designs, beside POD + Gaussian processes and the nearest
training design."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from modules.config.schema import RunConfig
from modules.data.design_features import baseline_features
from modules.data.prepared_sweep import PreparedSweep
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.evaluation.baselines import NearestNeighbourBaseline, PODGaussianProcessBaseline
from modules.evaluation.case_gram import (CaseGram, GramPCA, accumulate_case_gram, baselines_fit_in_memory,
                                          nearest_relative_errors, pod_gp_relative_errors, pooled_from_relative)
from modules.evaluation.metrics import pooled_relative_l2, relative_from_norms, squared_norms, summarize_errors
from modules.evaluation.vae_evaluation import evaluated_splits, plotted_positions
from modules.config.conditioner_rules import resolve_architecture
from modules.models.conditioners import count_parameters
from modules.runtime import memory
from modules.surrogate.surrogate import Surrogate


@dataclass
class ConditionerEvaluation:
    errors: Dict[str, Dict[str, np.ndarray]]
    """{"conditioner": {"train", "val"[, "test"]}, "pod_gp" and "nearest_neighbour": {"val"[, "test"]}}: relative
    L2 error per case."""
    pooled: Dict[str, Dict[str, float]]
    """The same keys: ||X - X_hat||_F / ||X||_F over each split's cases."""
    val_predictions: Dict[int, np.ndarray]
    """{case index: [T, N] prediction in physical units} of the plotted validation designs (`plotted_positions`)."""
    val_latents_true: np.ndarray
    val_latents_predicted: np.ndarray
    pod_modes: int



PredictionNorms = Callable[[Surrogate, np.ndarray, torch.Tensor], np.ndarray]
"""(surrogate, case indices, their predicted flat codes) -> metrics.squared_norms rows of the decoded predictions."""


def evaluate_conditioner(surrogate: Surrogate, designs: np.ndarray, latents: Dict[str, np.ndarray],
                         sweep: PreparedSweep, config: RunConfig,
                         case_gram: Optional[CaseGram] = None,
                         known_norms: Optional[PredictionNorms] = None) -> ConditionerEvaluation:
    """Held-out error of conditioner + decoder in physical units, beside POD+GP and nearest neighbour.

    Memory stays bounded for any sweep: predictions are decoded and measured one chunk of cases at a time, and
    the baselines hold the fields only while they fit (case_gram.baselines_fit_in_memory); otherwise their
    errors come from `case_gram` (the cases' Gram matrix, from evaluate_vae) or one made here. `known_norms`
    measures the predictions without reading the fields (from the training's projection of every case).
    """
    latent_numbers = surrogate.vae.flat_latent_dim
    splits = evaluated_splits(sweep)
    errors: Dict[str, Dict[str, np.ndarray]] = {"conditioner": {}, "pod_gp": {}, "nearest_neighbour": {}}
    pooled: Dict[str, Dict[str, float]] = {name: {} for name in errors}
    predicted_latents = _measure_predictions(surrogate, designs, splits, sweep, config, known_norms,
                                             errors["conditioner"], pooled["conditioner"])
    if surrogate.conditioner is not None and surrogate.conditioner.blend is not None:
        # The conditioners alone beside the blend, so that the report shows what each part brings.
        errors["network"], pooled["network"] = {}, {}
        _measure_predictions(surrogate.without_blend(), designs, splits, sweep, config, known_norms,
                             errors["network"], pooled["network"])
    positions = list(plotted_positions(errors["conditioner"]["val"]).values())
    plotted = surrogate.decode(predicted_latents["val"][positions])
    features = baseline_features(designs, sweep.train_indices)
    held_out = {split: indices for split, indices in splits.items() if split != "train"}
    if case_gram is None and baselines_fit_in_memory(config.data):
        train_fields = read_cases(sweep.array, sweep.train_indices, config.data)
        pod_gp = PODGaussianProcessBaseline().fit(features[sweep.train_indices], train_fields, latent_numbers)
        nearest = NearestNeighbourBaseline().fit(features[sweep.train_indices], train_fields)
        for split, indices in held_out.items():
            truth = read_cases(sweep.array, indices, config.data)
            for name, baseline in (("pod_gp", pod_gp), ("nearest_neighbour", nearest)):
                norms = squared_norms(truth, baseline.predict(features[indices]))
                errors[name][split], pooled[name][split] = relative_from_norms(norms), pooled_relative_l2(norms)
        pod_modes = pod_gp.num_modes
    else:
        gram = case_gram if case_gram is not None else \
            accumulate_case_gram(sweep.array, config.data, sweep.train_indices)
        pod = GramPCA(gram, latent_numbers)
        errors["pod_gp"].update(pod_gp_relative_errors(pod, features, held_out))
        for split, indices in held_out.items():
            errors["nearest_neighbour"][split] = nearest_relative_errors(gram, features, indices)
            for name in ("pod_gp", "nearest_neighbour"):
                pooled[name][split] = pooled_from_relative(gram, indices, errors[name][split])
        pod_modes = pod.num_components
    return ConditionerEvaluation(
        errors=errors, pooled=pooled,
        val_predictions={int(sweep.val_indices[position]): field for position, field in zip(positions, plotted)},
        val_latents_true=latents["flat"][sweep.val_indices],
        # An ensemble's code holds its members' codes side by side: the first member's is compared.
        val_latents_predicted=predicted_latents["val"][:, :latents["flat"].shape[1]].numpy(), pod_modes=pod_modes)


def _measure_predictions(surrogate: Surrogate, designs: np.ndarray, splits: Dict[str, np.ndarray],
                         sweep: PreparedSweep, config: RunConfig, known_norms: Optional[PredictionNorms],
                         errors: Dict[str, np.ndarray], pooled: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """Fill errors and pooled per split with the surrogate's prediction errors; returns its predicted codes."""
    chunk_cases = cases_per_chunk(sweep.array)
    predicted_latents = {}
    for split, indices in splits.items():
        flat = surrogate.predict_latents(designs[indices])
        if known_norms is not None:
            norms = known_norms(surrogate, indices, flat)
        else:
            norms = np.concatenate([squared_norms(read_cases(sweep.array, indices[rows], config.data),
                                                  surrogate.decode(flat[rows]))
                                    for rows in memory.chunk_slices(len(indices), chunk_cases)])
        errors[split], pooled[split] = relative_from_norms(norms), pooled_relative_l2(norms)
        predicted_latents[split] = flat
    return predicted_latents


def conditioner_report_section(evaluation: ConditionerEvaluation, training: Optional[Dict[str, Any]],
                               config: RunConfig, surrogate: Surrogate) -> Dict[str, Any]:
    """The report's conditioner entry; `training` is the stage's TrainingResult.summary()."""
    trained = surrogate.conditioner
    section: Dict[str, Any] = {
        "architecture": resolve_architecture(config.conditioner),
        "input_type": config.conditioner.input_type,
        "end_to_end": config.end_to_end.enabled,
        "parameters": count_parameters(trained.model),
        "pod_gp_modes": evaluation.pod_modes,
        "image_pca_components": 0 if trained.image_pca is None else trained.image_pca.num_components,
        "on_design_prior": trained.on_design_prior,
        "prediction_decoder": config.end_to_end.prediction_decoder,
        "ensemble_members": trained.members,
        "ensemble_trained": trained.members_trained,
        "ensemble_configured": config.conditioner.ensemble_members,
        "ensemble_kept": [member + 1 for member in trained.members_kept],
        "pod_gp_blend": ({"weight_on_conditioners": trained.blend.weight, "gaussian_processes": trained.blend.scores,
                          "processes_read": "the conditioners' code" if trained.blend.reads_code else "the design"}
                         if trained.blend is not None else None),
        # The 1-based column the fields were predicted in proportion to (models/amplitude.py), or None.
        "amplitude_parameter": None if trained.amplitude is None else trained.amplitude.column + 1,
        # The constant field value it scales about (0, or e.g. an ambient temperature), or None.
        "amplitude_reference": None if trained.amplitude is None else trained.amplitude.reference,
        "prediction_relative_l2": {name: {split: summarize_errors(errors, evaluation.pooled[name][split])
                                          for split, errors in per_split.items()}
                                   for name, per_split in evaluation.errors.items()},
    }
    if trained.image_pca is not None:
        section["image_pca_variance_explained"] = trained.image_pca.variance_explained
    if training is not None:
        section["training"] = training
    return section
