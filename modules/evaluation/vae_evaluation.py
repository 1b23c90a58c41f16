"""How well the VAE reconstructs known cases, beside PCA with as many numbers as the VAE's latent code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np

from modules.config.schema import DataConfig
from modules.data.prepared_sweep import PreparedSweep
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.evaluation.baselines import PCABaseline
from modules.evaluation.case_gram import CaseGram, GramPCA, accumulate_case_gram, baselines_fit_in_memory
from modules.evaluation.metrics import pooled_relative_l2, relative_from_norms, squared_norms, summarize_errors
from modules.runtime import memory
from modules.surrogate.surrogate import Surrogate


@dataclass
class VAEEvaluation:
    """Relative L2 errors per case (physical units) of the VAE and of PCA with as many numbers, per split."""

    vae: Dict[str, np.ndarray]
    """{"train", "val"[, "test"]: relative L2 error per case}."""
    pca: Dict[str, np.ndarray]
    pooled: Dict[str, Dict[str, float]]
    """{"vae"/"pca": {split: ||X - X_hat||_F / ||X||_F over the split's cases}}."""
    pca_components: int
    val_reconstructions: Dict[int, np.ndarray]
    """{case index: [T, N] reconstruction in physical units} of the plotted validation cases (`plotted_positions`)."""
    case_gram: Optional[CaseGram]
    """The cases' Gram matrix when the baselines were too large for memory (else None); the conditioner's
    baselines reuse it instead of reading the sweep again."""



def evaluated_splits(sweep: PreparedSweep) -> Dict[str, np.ndarray]:
    """{"train", "val", and "test" when the run has one: case indices}."""
    splits = {"train": sweep.train_indices, "val": sweep.val_indices}
    if len(sweep.test_indices):
        splits["test"] = sweep.test_indices
    return splits


TRAIN_FIT_CASES = 64
"""The training split's reconstruction error (a measure of fit, not of generalisation) is taken on at most this
many evenly spread training cases: each case costs up to refine_steps L-BFGS iterations (about 0.3 s at 40
timesteps, 1 s at 200, on 2 cores), and on the development sweeps all 144 training cases took the report's
reconstruction from 40 to 106 s. Validation and test cases are always measured whole."""


def measured_splits(sweep: PreparedSweep) -> Dict[str, np.ndarray]:
    """evaluated_splits, with the training split thinned to TRAIN_FIT_CASES."""
    splits = evaluated_splits(sweep)
    train = splits["train"]
    if len(train) > TRAIN_FIT_CASES:
        splits["train"] = train[np.linspace(0, len(train) - 1, TRAIN_FIT_CASES).round().astype(np.int64)]
    return splits


def plotted_positions(errors: np.ndarray) -> Dict[str, int]:
    """Positions (in `errors`) of the cases worth plotting: {"median": typical case, "worst": largest error}."""
    order = np.argsort(errors)
    return {"median": int(order[len(order) // 2]), "worst": int(order[-1])}


def fit_pca_baseline(sweep: PreparedSweep, data: DataConfig, num_components: int) -> PCABaseline:
    """PCA of the training fields held in memory (callers check case_gram.baselines_fit_in_memory first)."""
    return PCABaseline().fit(read_cases(sweep.array, sweep.train_indices, data), num_components)


ReconstructionNorms = Callable[[np.ndarray], np.ndarray]
"""case indices -> metrics.squared_norms rows of the VAE's reconstruction of those cases."""


def evaluate_vae(surrogate: Surrogate, sweep: PreparedSweep, data: DataConfig,
                 known_norms: Optional[ReconstructionNorms] = None) -> VAEEvaluation:
    """Relative L2 of the VAE and of PCA with as many components as the VAE has latent numbers.

    Memory stays bounded for any sweep: the VAE is measured one chunk of cases at a time, and PCA is fitted
    on the fields in memory only while they fit (memory.IN_MEMORY_BASELINE_BYTES), else its errors come
    from the cases' Gram matrix (one pass over the file in blocks of timesteps). `known_norms` gives the
    VAE's errors without the fields (from the training's projection of every case): with it and the Gram
    matrix, the sweep is read once here, not twice.
    """
    latent_numbers = surrogate.vae.flat_latent_dim
    gram = None if baselines_fit_in_memory(data) else accumulate_case_gram(sweep.array, data, sweep.train_indices)
    pca = fit_pca_baseline(sweep, data, latent_numbers) if gram is None else GramPCA(gram, latent_numbers)
    chunk_cases = cases_per_chunk(sweep.array)
    errors: Dict[str, Dict[str, np.ndarray]] = {"vae": {}, "pca": {}}
    pooled: Dict[str, Dict[str, float]] = {"vae": {}, "pca": {}}
    for split, indices in measured_splits(sweep).items():
        vae_norms, pca_norms = [], []
        needs_fields = known_norms is None or gram is None
        for chunk in memory.chunks(indices, chunk_cases):
            truth = read_cases(sweep.array, chunk, data) if needs_fields else None
            vae_norms.append(squared_norms(truth, surrogate.reconstruct(truth)) if known_norms is None
                             else known_norms(chunk))
            if gram is None:
                pca_norms.append(squared_norms(truth, pca.reconstruct(truth)))
        norms = np.concatenate(vae_norms)
        errors["vae"][split], pooled["vae"][split] = relative_from_norms(norms), pooled_relative_l2(norms)
        if gram is None:
            norms = np.concatenate(pca_norms)
            errors["pca"][split], pooled["pca"][split] = relative_from_norms(norms), pooled_relative_l2(norms)
        else:
            errors["pca"][split] = pca.relative_errors(indices)
            pooled["pca"][split] = pca.pooled_error(indices)
    # Only the plotted cases are kept (all validation reconstructions of a large sweep would not fit);
    # they are decoded again, as their positions are known only once every error is.
    plotted = [int(sweep.val_indices[position]) for position in plotted_positions(errors["vae"]["val"]).values()]
    recon = surrogate.reconstruct(read_cases(sweep.array, plotted, data))
    return VAEEvaluation(errors["vae"], errors["pca"], pooled, pca.num_components, dict(zip(plotted, recon)), gram)


def vae_report_section(evaluation: VAEEvaluation, training: Optional[Dict[str, Any]], surrogate: Surrogate,
                       sweep: PreparedSweep) -> Dict[str, Any]:
    """The report's VAE entry; `training` is the stage's TrainingResult.summary() (None when it was loaded)."""
    section: Dict[str, Any] = {
        "latent_numbers": surrogate.vae.flat_latent_dim,
        "pca_components": evaluation.pca_components,
        "parameters": surrogate.vae.parameter_count(),
        "relative_l2": {model: {split: summarize_errors(errors, evaluation.pooled[model][split])
                                for split, errors in getattr(evaluation, model).items()}
                        for model in ("vae", "pca")},
        "val_case_indices": [int(i) for i in sweep.val_indices],
        "test_case_indices": [int(i) for i in sweep.test_indices],
        "train_cases": len(sweep.train_indices),
        "refine_steps": surrogate.vae.cfg.refine_steps,
        "reconstruction_decoder": surrogate.reconstruction_decoder,
    }
    if surrogate.reconstructs_by_design:  # the code is the design: its numbers, not the VAE's latent numbers
        section["reconstruction_numbers"] = int(surrogate.conditioner.training_designs.shape[1])
    if training is not None:
        section["training"] = training
    return section
