"""Baseline errors of sweeps too large to hold, from the cases' Gram matrix (one streamed pass over the file).

Every error the classical baselines report is a function of inner products between whole
cases. With mu the mean training case, x_c = x - mu, and X_c the centred training cases [k, F]:

* PCA of X_c is the eigendecomposition of its Gram matrix G = X_c X_c^T = U S^2 U^T. The
  components are V = S^-1 U^T X_c (orthonormal rows), so a case's coefficients are
  c = S^-1 U^T (X_c x_c) and its squared projection error is ||x_c||^2 - ||c||^2.
* POD+GP predicts coefficients c_hat from the design: error^2 = ||x_c||^2 - 2 c_hat.c + ||c_hat||^2.
* Nearest neighbour n: ||x - n||^2 = x_c.x_c - 2 x_c.n_c + n_c.n_c.

So one [cases, cases] matrix stands in for the [cases, timesteps, nodes] fields. The results
are exact (not approximations), and memory is one block of timesteps of every case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from modules.evaluation.baselines import NearestNeighbourBaseline, PODGaussianProcessBaseline
from modules.config.schema import DataConfig
from modules.data.sweep_file import read_timestep_block
from modules.errors import DataError
from modules.runtime import memory, progress


def baselines_fit_in_memory(data: DataConfig) -> bool:
    """Whether the baselines may hold the windowed fields of every case (float32) in memory."""
    return data.num_cases * data.timesteps * data.channels * 4 <= memory.IN_MEMORY_BASELINE_BYTES


@dataclass(frozen=True)
class CaseGram:
    """Inner products between the windowed fields of all cases of a sweep, flattened over timesteps x nodes."""

    centred: np.ndarray
    """[cases, cases] float64: (x_i - mu) . (x_j - mu), mu the mean of the training cases."""
    squared_norms: np.ndarray
    """[cases] float64: ||x_i||^2, the denominators of the relative errors."""
    train_indices: np.ndarray
    """The cases whose mean is mu (and whose PCA the baselines use)."""
    num_features: int
    """timesteps x channels (nodes x variables) of one windowed case."""


def accumulate_case_gram(array: np.ndarray, data: DataConfig, train_indices: Sequence[int],
                         block_bytes: Optional[int] = None, column_bytes: Optional[int] = None) -> CaseGram:
    """The Gram matrix of every case's window, read once in blocks of timesteps [cases, steps, nodes].

    Centred on the training mean block by block: a block holds every case, so the training
    mean of its columns is known there and the sums stay free of the cancellation that
    ||x||^2 - 2 x.mu + ||mu||^2 suffers for fields with a large offset (e.g. temperatures).
    """
    train = np.asarray(train_indices, dtype=np.int64).ravel()
    num_cases = data.num_cases
    if train.size == 0:
        raise DataError("case Gram matrix: no training cases to centre on; expected at least one "
                        "(lower validation_fraction)")
    cases = np.arange(num_cases)
    steps_per_block = memory.items_per_chunk(num_cases * data.channels * 4, block_bytes or memory.GRAM_BLOCK_BYTES)
    columns_per_slice = memory.items_per_chunk(num_cases * 8, column_bytes or memory.GRAM_COLUMN_BYTES)
    centred = np.zeros((num_cases, num_cases), dtype=np.float64)
    squared_norms = np.zeros(num_cases, dtype=np.float64)
    blocks = memory.chunk_slices(data.timesteps, steps_per_block)
    for steps in progress.counted(blocks, data.timesteps, "report: Gram matrix of every case", unit="step"):
        block = read_timestep_block(array, cases, steps.start, steps.stop, data).reshape(num_cases, -1)
        for columns in memory.chunk_slices(block.shape[1], columns_per_slice):
            values = block[:, columns].astype(np.float64)
            squared_norms += np.einsum("ij,ij->i", values, values)
            values -= values[train].mean(axis=0)
            centred += values @ values.T
    return CaseGram(centred, squared_norms, train, data.timesteps * data.channels)


def relative_errors(gram: CaseGram, indices: Sequence[int], squared_errors: np.ndarray) -> np.ndarray:
    """sqrt(error^2) / ||x|| per case (the absolute error where ||x|| = 0), as metrics.relative_l2_per_case."""
    indices = np.asarray(indices, dtype=np.int64)
    # error^2 is a difference of Gram sums: a true 0 (a training case inside its own PCA span) can come
    # out as -1e-16 * ||x||^2 from round-off, and its square root must be 0, not NaN.
    errors = np.sqrt(np.maximum(np.asarray(squared_errors, dtype=np.float64), 0.0))
    norms = np.sqrt(gram.squared_norms[indices])
    return np.where(norms > 0, errors / np.where(norms > 0, norms, 1.0), errors)


def pooled_from_relative(gram: CaseGram, indices: Sequence[int], relative: np.ndarray) -> float:
    """||X - X_hat||_F / ||X||_F over `indices` from their per-case relative errors (metrics.pooled_relative_l2)."""
    norms_sq = gram.squared_norms[np.asarray(indices, dtype=np.int64)]
    return float(np.sqrt(np.sum(np.asarray(relative) ** 2 * norms_sq) / max(float(np.sum(norms_sq)), 1e-300)))


class GramPCA:
    """PCA of the centred training cases from their Gram matrix: the subspace of PCABaseline.fit.

    `num_components` is min(requested, training cases, timesteps x nodes), as PCABaseline. Of
    those, directions without training variance (eigenvalue at round-off level, e.g. the last one
    when every training case is used) are left out: their direction is arbitrary, and no training
    case has a coefficient along them.
    """

    def __init__(self, gram: CaseGram, num_components: int) -> None:
        train = gram.train_indices
        if num_components < 1:
            raise DataError(f"PCA baseline: num_components must be at least 1, got {num_components}")
        if len(train) < 2:
            raise DataError(f"PCA baseline: needs at least 2 training cases to find a direction of variation, "
                            f"got {len(train)}")
        self.gram = gram
        self.num_components = int(min(num_components, len(train), gram.num_features))
        eigenvalues, eigenvectors = np.linalg.eigh(gram.centred[np.ix_(train, train)])
        order = np.argsort(eigenvalues)[::-1][:self.num_components]
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
        tolerance = max(float(eigenvalues[0]), 0.0) * len(train) * np.finfo(np.float64).eps
        kept = eigenvalues > tolerance
        self._projection = eigenvectors[:, kept] / np.sqrt(eigenvalues[kept])  # U S^-1: [training cases, modes]

    @property
    def num_modes_with_variance(self) -> int:
        return int(self._projection.shape[1])

    def coefficients(self, indices: Sequence[int]) -> np.ndarray:
        """PCA coefficients c = S^-1 U^T X_c x_c of cases [m] (float64 [m, modes])."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.gram.centred[np.ix_(indices, self.gram.train_indices)] @ self._projection

    def centred_squared_norms(self, indices: Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return self.gram.centred[indices, indices]

    def relative_errors(self, indices: Sequence[int]) -> np.ndarray:
        """Relative L2 error of projecting each case onto the components and back."""
        coefficients = self.coefficients(indices)
        return relative_errors(self.gram, indices,
                               self.centred_squared_norms(indices) - (coefficients ** 2).sum(axis=1))

    def pooled_error(self, indices: Sequence[int]) -> float:
        return pooled_from_relative(self.gram, indices, self.relative_errors(indices))


def pod_gp_relative_errors(pca: GramPCA, design_features: np.ndarray,
                           query_splits: Dict[str, Sequence[int]], random_state: int = 0) -> Dict[str, np.ndarray]:
    """POD+GP (PODGaussianProcessBaseline's per-mode GPs) fitted once on the training cases, error on each
    split of `query_splits` (name -> case indices). One fit for all splits: at several hundred designs it
    takes minutes.

    design_features: [all cases, features], one row per case of the sweep.
    """
    gram = pca.gram
    process = None
    if pca.num_modes_with_variance > 0:
        process = PODGaussianProcessBaseline(random_state=random_state).fit_coefficients(
            design_features[gram.train_indices], pca.coefficients(gram.train_indices))
    errors = {}
    for name, query_indices in query_splits.items():
        query = np.asarray(query_indices, dtype=np.int64)
        actual = pca.coefficients(query)
        # no training variation: the prediction is the mean case
        predicted = np.zeros_like(actual) if process is None else process.predict_coefficients(design_features[query])
        squared = (pca.centred_squared_norms(query) - 2.0 * (predicted * actual).sum(axis=1)
                   + (predicted ** 2).sum(axis=1))
        errors[name] = relative_errors(gram, query, squared)
    return errors


def nearest_relative_errors(gram: CaseGram, design_features: np.ndarray, query_indices: Sequence[int]) -> np.ndarray:
    """Error of predicting each query case by the training case with the nearest design (NearestNeighbourBaseline).

    design_features: [all cases, features], one row per case of the sweep.
    """
    query = np.asarray(query_indices, dtype=np.int64)
    positions = NearestNeighbourBaseline().fit_inputs(design_features[gram.train_indices]).nearest_indices(
        design_features[query])
    nearest = gram.train_indices[positions]
    centred = gram.centred
    squared = centred[query, query] - 2.0 * centred[query, nearest] + centred[nearest, nearest]
    return relative_errors(gram, query, squared)
