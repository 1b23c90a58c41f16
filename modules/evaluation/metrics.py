"""Accuracy metrics of fields in physical units.

All arrays are numpy, in physical (unscaled) units, shaped [cases, timesteps, nodes].
The headline metric is the relative L2 error of each case's whole field, so one
number per case; `summarize_errors` reduces those to mean/median/max and the
positions of the worst and the typical case (the ones worth plotting).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from modules.errors import DataError

SUMMARY_KEYS = ("count", "mean", "median", "max", "min", "argmax", "argmedian")


def relative_l2_per_case(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Relative L2 error of each case: ||x - x_hat||_2 / ||x||_2 over its whole [T, N] field.

    Where a case's true field is identically zero the ratio is undefined, so that
    case reports the absolute error norm ||x_hat||_2 instead (0 for a perfect
    prediction) rather than inf or nan.

    Returns float64 [cases]. Cases are processed one at a time in float64 so that
    memory-mapped or float32 inputs neither overflow nor need a full-size copy.
    """
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise DataError(
            f"relative L2 error: truth has shape {truth.shape} but prediction has shape {prediction.shape}; "
            "expected identical [cases, timesteps, nodes] shapes. fix: compare predictions of the same cases, "
            "timestep window and node range as the truth")
    if truth.ndim < 2 or truth.shape[0] == 0:
        raise DataError(
            f"relative L2 error: expected a non-empty [cases, timesteps, nodes] array, got shape {truth.shape}")
    errors = np.empty(truth.shape[0], dtype=np.float64)
    for case in range(truth.shape[0]):
        true_field = np.asarray(truth[case], dtype=np.float64).ravel()
        predicted_field = np.asarray(prediction[case], dtype=np.float64).ravel()
        for name, field in (("truth", true_field), ("prediction", predicted_field)):
            if not np.all(np.isfinite(field)):
                raise DataError(
                    f"relative L2 error: {name} of case position {case} contains NaN or infinite values; "
                    "expected finite numbers. fix: check the dataset file (truth) or the model/checkpoint "
                    "that produced the prediction")
        error_norm = float(np.linalg.norm(true_field - predicted_field))
        truth_norm = float(np.linalg.norm(true_field))
        errors[case] = error_norm / truth_norm if truth_norm > 0.0 else error_norm
    return errors


def squared_norms(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """[cases, 2] float64: each case's squared error norm and squared truth norm (for the pooled error)."""
    out = np.empty((len(truth), 2), dtype=np.float64)
    for case in range(len(truth)):
        true_field = np.asarray(truth[case], dtype=np.float64)
        out[case] = (np.sum((true_field - np.asarray(prediction[case], dtype=np.float64)) ** 2), np.sum(true_field ** 2))
    return out


def pooled_relative_l2(norms: np.ndarray) -> float:
    """||X - X_hat||_F / ||X||_F over all the cases of `squared_norms` rows: the error of the whole set, in
    which large-amplitude cases weigh more (the figure the classic baselines of a sweep are quoted in)."""
    return float(np.sqrt(norms[:, 0].sum() / max(norms[:, 1].sum(), 1e-300)))


def summarize_errors(errors: np.ndarray, pooled: Optional[float] = None) -> Dict[str, Any]:
    """Mean, median, max and min of per-case errors, plus where the worst and the typical case are (and the
    pooled error of the whole set when given, see pooled_relative_l2).

    `argmax` is the position (in `errors`) of the worst case; `argmedian` the
    position of a case closest to the median. With an even count the two middle
    cases are equally close, so the lower one is taken by rank rather than left to
    floating-point round-off. All values are plain Python floats/ints so the
    result is JSON-serialisable.
    """
    values = np.asarray(errors, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise DataError(f"error summary: expected a non-empty 1-D array of per-case errors, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        bad = np.flatnonzero(~np.isfinite(values)).tolist()
        raise DataError(f"error summary: per-case errors at positions {bad} are NaN or infinite; expected finite "
                        "values. fix: check the predictions of those cases")
    median = float(np.median(values))
    extra = {} if pooled is None else {"pooled": float(pooled)}
    return {
        **extra,
        "count": int(values.size),
        "mean": float(np.mean(values)),
        "median": median,
        "max": float(np.max(values)),
        "min": float(np.min(values)),
        "argmax": int(np.argmax(values)),
        "argmedian": int(np.argsort(values, kind="stable")[(values.size - 1) // 2]),
    }
