"""How well the VAE reconstructs known cases, beside PCA with as many numbers as the VAE's latent code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from modules.config.schema import DataConfig
from modules.data.prepared_sweep import PreparedSweep
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.evaluation.baselines import PCABaseline
from modules.evaluation.case_gram import CaseGram, GramPCA, accumulate_case_gram, baselines_fit_in_memory
from modules.evaluation.metrics import relative_l2_per_case, summarize_errors
from modules.runtime import memory
from modules.surrogate.surrogate import Surrogate


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


def fit_pca_baseline(sweep: PreparedSweep, data: DataConfig, num_components: int) -> PCABaseline:
    """PCA of the training fields held in memory (callers check case_gram.baselines_fit_in_memory first)."""
    return PCABaseline().fit(read_cases(sweep.array, sweep.train_indices, data), num_components)


def evaluate_vae(surrogate: Surrogate, sweep: PreparedSweep, data: DataConfig) -> VAEEvaluation:
    """Relative L2 of the VAE and of PCA with as many components as the VAE has latent numbers.

    Memory stays bounded for any sweep: the VAE is measured one chunk of cases at a time, and PCA is fitted
    on the fields in memory only while they fit (memory.IN_MEMORY_BASELINE_BYTES), else its errors come
    from the cases' Gram matrix (one pass over the file in blocks of timesteps).
    """
    latent_numbers = surrogate.vae.flat_latent_dim
    gram = None if baselines_fit_in_memory(data) else accumulate_case_gram(sweep.array, data, sweep.train_indices)
    pca = fit_pca_baseline(sweep, data, latent_numbers) if gram is None else GramPCA(gram, latent_numbers)
    chunk_cases = cases_per_chunk(sweep.array)
    errors: Dict[str, np.ndarray] = {}
    for split, indices in (("train", sweep.train_indices), ("val", sweep.val_indices)):
        vae_parts, pca_parts = [], []
        for chunk in memory.chunks(indices, chunk_cases):
            truth = read_cases(sweep.array, chunk, data)
            vae_parts.append(relative_l2_per_case(truth, surrogate.reconstruct(truth)))
            if gram is None:
                pca_parts.append(relative_l2_per_case(truth, pca.reconstruct(truth)))
        errors[f"vae_{split}"] = np.concatenate(vae_parts)
        errors[f"pca_{split}"] = np.concatenate(pca_parts) if gram is None else pca.relative_errors(indices)
    # Only the plotted cases are kept (all validation reconstructions of a large sweep would not fit);
    # they are decoded again, as their positions are known only once every error is.
    plotted = [int(sweep.val_indices[position]) for position in plotted_positions(errors["vae_val"]).values()]
    recon = surrogate.reconstruct(read_cases(sweep.array, plotted, data))
    return VAEEvaluation(errors["vae_train"], errors["vae_val"], errors["pca_train"], errors["pca_val"],
                         pca.num_components, dict(zip(plotted, recon)), gram)


def vae_report_section(evaluation: VAEEvaluation, training: Optional[Dict[str, Any]], surrogate: Surrogate,
                       sweep: PreparedSweep) -> Dict[str, Any]:
    """The report's VAE entry; `training` is the stage's TrainingResult.summary() (None when it was loaded)."""
    section: Dict[str, Any] = {
        "latent_numbers": surrogate.vae.flat_latent_dim,
        "pca_components": evaluation.pca_components,
        "parameters": surrogate.vae.parameter_count(),
        "relative_l2": {
            "vae": {"train": summarize_errors(evaluation.vae_train), "val": summarize_errors(evaluation.vae_val)},
            "pca": {"train": summarize_errors(evaluation.pca_train), "val": summarize_errors(evaluation.pca_val)},
        },
        "val_case_indices": [int(i) for i in sweep.val_indices],
    }
    if training is not None:
        section["training"] = training
    return section
