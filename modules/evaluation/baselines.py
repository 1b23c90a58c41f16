"""Classical baselines the report compares the neural surrogate against.

* `PCABaseline`: how well a linear subspace of the training fields represents a
  field (a floor for the VAE's reconstruction error at a similar code size).
* `PODGaussianProcessBaseline`: POD modes of the fields + a Gaussian process from
  design inputs to mode coefficients (the standard non-neural surrogate).
* `NearestNeighbourBaseline`: the field of the closest training design (the
  error any surrogate has to beat to be worth training).

Fields are numpy [cases, timesteps, nodes] in physical units. Design inputs are
any [cases, features] matrix: CSV parameters, or images flattened by the caller.
Fitting works in float64 so exact-subspace cases reconstruct to round-off;
predictions are returned in the dtype of the training fields.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from sklearn.decomposition import PCA
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.preprocessing import StandardScaler

from modules.errors import DataError
from modules.models.design_gp import fit_gaussian_processes

def _check_fields(fields: np.ndarray, what: str) -> np.ndarray:
    fields = np.asarray(fields)
    if fields.ndim != 3 or fields.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty [cases, timesteps, nodes] array, got shape {fields.shape}")
    return fields


def _check_inputs(design_inputs: np.ndarray, what: str) -> np.ndarray:
    inputs = np.asarray(design_inputs, dtype=np.float64)
    if inputs.ndim != 2 or inputs.shape[0] == 0:
        raise DataError(f"{what}: expected a non-empty [cases, features] design matrix, got shape {inputs.shape}; "
                        "flatten image inputs to one row per case first")
    if not np.all(np.isfinite(inputs)):
        rows = np.flatnonzero(~np.all(np.isfinite(inputs), axis=1)).tolist()
        raise DataError(f"{what}: design inputs of case positions {rows} contain NaN or infinite values; "
                        "fix: fill or remove those rows in the condition file")
    return inputs


def _check_pairing(inputs: np.ndarray, fields: np.ndarray, what: str) -> None:
    if inputs.shape[0] != fields.shape[0]:
        raise DataError(f"{what}: {inputs.shape[0]} design rows but {fields.shape[0]} fields; expected one design "
                        "row per case. fix: select the same training cases from both")


class PCABaseline:
    """Project fields onto the leading principal components of the training fields and back.

    The number of components actually used is min(requested, training cases,
    timesteps * nodes), exposed as `num_components` (the request as
    `requested_components`).
    """

    def __init__(self) -> None:
        self._model: Optional[PCA] = None
        self.requested_components: int = 0
        self.num_components: int = 0
        self.field_shape: tuple = ()
        self._dtype: np.dtype = np.dtype(np.float64)

    @staticmethod
    def _check_request(requested: int, num_cases: int) -> None:
        if requested < 1:
            raise DataError(f"PCA baseline: num_components must be at least 1, got {requested}")
        if num_cases < 2:
            raise DataError(f"PCA baseline: needs at least 2 training cases to find a direction of variation, "
                            f"got {num_cases}")

    def _set_components(self, requested: int, num_cases: int, num_features: int) -> None:
        self.requested_components = int(requested)
        self.num_components = int(min(requested, num_cases, num_features))

    def fit(self, train_fields: np.ndarray, num_components: int) -> "PCABaseline":
        """Exact PCA of the training fields [k, T, N], held in memory as float64 [k, T*N]."""
        fields = _check_fields(train_fields, "PCA baseline fit")
        num_cases = fields.shape[0]
        self._check_request(num_components, num_cases)
        self._set_components(num_components, num_cases, fields[0].size)
        self.field_shape = fields.shape[1:]
        self._dtype = np.result_type(fields.dtype, np.float32)
        # Full SVD rather than sklearn's "auto" (randomised for large data): a baseline should be exact.
        self._model = PCA(n_components=self.num_components, svd_solver="full")
        self._model.fit(fields.reshape(num_cases, -1).astype(np.float64))
        return self

    def _fitted(self) -> PCA:
        if self._model is None:
            raise RuntimeError("PCABaseline is not fitted; call fit() first")
        return self._model

    def encode(self, fields: np.ndarray) -> np.ndarray:
        """Principal-component coefficients [m, num_components] of fields [m, T, N]."""
        model = self._fitted()
        fields = _check_fields(fields, "PCA baseline")
        if fields.shape[1:] != self.field_shape:
            raise DataError(f"PCA baseline: fields have [timesteps, nodes] {fields.shape[1:]}, the baseline was "
                            f"fitted on {self.field_shape}; expected the same window")
        return model.transform(fields.reshape(fields.shape[0], -1).astype(np.float64))

    def decode(self, coefficients: np.ndarray) -> np.ndarray:
        """Fields [m, T, N] (training dtype) from coefficients [m, num_components]."""
        model = self._fitted()
        coefficients = np.asarray(coefficients, dtype=np.float64)
        flat = model.inverse_transform(coefficients.reshape(-1, self.num_components))
        return flat.reshape((-1,) + tuple(self.field_shape)).astype(self._dtype, copy=False)

    def reconstruct(self, fields: np.ndarray) -> np.ndarray:
        """Project fields [m, T, N] onto the fitted components and back."""
        return self.decode(self.encode(fields))


class PODGaussianProcessBaseline:
    """POD (PCA) modes of the fields, with a Gaussian process mapping design inputs to mode coefficients.

    The design matrix is any [cases, features] array: CSV parameters, or images
    the caller flattened to one row per case. Inputs are standardised on the
    training rows (a constant column gets scale 1, as it carries no information).
    One GP per mode (models/design_gp.py).
    Optimiser warnings (e.g. a length scale at its bound) are kept in
    `fit_warnings` for the report instead of being printed or dropped.
    """

    def __init__(self, random_state: int = 0, n_restarts_optimizer: int = 1) -> None:
        self.random_state = random_state
        self.n_restarts_optimizer = n_restarts_optimizer
        self.pod = PCABaseline()
        self.scaler: Optional[StandardScaler] = None
        self.gaussian_processes: List[GaussianProcessRegressor] = []
        self.fit_warnings: List[str] = []

    @property
    def num_modes(self) -> int:
        return len(self.gaussian_processes)

    def fit(self, train_design_inputs: np.ndarray, train_fields: np.ndarray,
            num_modes: int) -> "PODGaussianProcessBaseline":
        inputs = _check_inputs(train_design_inputs, "POD+GP baseline fit")
        fields = _check_fields(train_fields, "POD+GP baseline fit")
        _check_pairing(inputs, fields, "POD+GP baseline fit")
        self.pod.fit(fields, num_modes)
        return self.fit_coefficients(inputs, self.pod.encode(fields))

    def fit_coefficients(self, train_design_inputs: np.ndarray, coefficients: np.ndarray,
                         label: str = "report: POD + GP, one Gaussian process per mode") -> "PODGaussianProcessBaseline":
        """Only the Gaussian processes: design inputs [k, features] -> given mode coefficients [k, modes].

        For callers that found the POD some other way (modules/case_gram.py gets it from the
        cases' Gram matrix when the fields are too large to hold); `fit` is this after its own POD.
        """
        inputs = _check_inputs(train_design_inputs, "POD+GP baseline fit")
        coefficients = np.asarray(coefficients, dtype=np.float64)
        if coefficients.ndim != 2 or coefficients.shape[0] != inputs.shape[0]:
            raise DataError(f"POD+GP baseline fit: expected mode coefficients [{inputs.shape[0]} cases, modes], "
                            f"got shape {coefficients.shape}; expected one row per design row")
        self.scaler = StandardScaler().fit(inputs)
        scaled = self.scaler.transform(inputs)
        self.gaussian_processes, self.fit_warnings = fit_gaussian_processes(
            scaled, coefficients, label, self.random_state, self.n_restarts_optimizer)
        return self

    def predict(self, design_inputs: np.ndarray) -> np.ndarray:
        """Fields [m, T, N] predicted for design inputs [m, features]."""
        coefficients = self.predict_coefficients(design_inputs)
        return self.pod.decode(coefficients)

    def predict_coefficients(self, design_inputs: np.ndarray) -> np.ndarray:
        """Mode coefficients [m, modes] (float64) predicted for design inputs [m, features]."""
        if not self.gaussian_processes or self.scaler is None:
            raise RuntimeError("PODGaussianProcessBaseline is not fitted; call fit() first")
        inputs = _check_inputs(design_inputs, "POD+GP baseline predict")
        if inputs.shape[1] != self.scaler.n_features_in_:
            raise DataError(f"POD+GP baseline predict: design inputs have {inputs.shape[1]} features, the baseline "
                            f"was fitted on {self.scaler.n_features_in_}; expected the same columns")
        scaled = self.scaler.transform(inputs)
        coefficients = np.stack([process.predict(scaled) for process in self.gaussian_processes], axis=1)
        return coefficients.reshape(inputs.shape[0], -1)


class NearestNeighbourBaseline:
    """Predict the field of the training design closest in standardised Euclidean distance.

    Keeps a reference to the training fields (no copy), so a memory-mapped array
    stays on disk. Ties go to the earlier training case.
    """

    def __init__(self) -> None:
        self.scaler: Optional[StandardScaler] = None
        self._train_inputs: Optional[np.ndarray] = None
        self._train_fields: Optional[np.ndarray] = None

    def fit(self, train_design_inputs: np.ndarray, train_fields: np.ndarray) -> "NearestNeighbourBaseline":
        inputs = _check_inputs(train_design_inputs, "nearest-neighbour baseline fit")
        fields = _check_fields(train_fields, "nearest-neighbour baseline fit")
        _check_pairing(inputs, fields, "nearest-neighbour baseline fit")
        self.fit_inputs(inputs)
        self._train_fields = fields
        return self

    def fit_inputs(self, train_design_inputs: np.ndarray) -> "NearestNeighbourBaseline":
        """Only the design side: enough for `nearest_indices` (modules/case_gram.py measures the
        fields' distances from the Gram matrix instead of holding them), not for `predict`."""
        inputs = _check_inputs(train_design_inputs, "nearest-neighbour baseline fit")
        self.scaler = StandardScaler().fit(inputs)
        self._train_inputs = self.scaler.transform(inputs)
        self._train_fields = None
        return self

    def nearest_indices(self, design_inputs: np.ndarray) -> np.ndarray:
        """Position in the training set of the nearest training design, per row [m]."""
        if self.scaler is None or self._train_inputs is None:
            raise RuntimeError("NearestNeighbourBaseline is not fitted; call fit() first")
        inputs = _check_inputs(design_inputs, "nearest-neighbour baseline predict")
        if inputs.shape[1] != self._train_inputs.shape[1]:
            raise DataError(f"nearest-neighbour baseline predict: design inputs have {inputs.shape[1]} features, "
                            f"the baseline was fitted on {self._train_inputs.shape[1]}; expected the same columns")
        scaled = self.scaler.transform(inputs)
        # One query row at a time: flattened images make a [m, k, features] difference array too large.
        return np.array([int(np.argmin(((self._train_inputs - row) ** 2).sum(axis=1))) for row in scaled],
                        dtype=np.int64)

    def predict(self, design_inputs: np.ndarray) -> np.ndarray:
        """Fields [m, T, N]: a copy of the nearest training case's field for each design row."""
        indices = self.nearest_indices(design_inputs)
        if self._train_fields is None:
            raise RuntimeError("NearestNeighbourBaseline was fitted with fit_inputs() only; call fit() with the "
                               "training fields to predict fields")
        return np.stack([np.array(self._train_fields[index]) for index in indices])
