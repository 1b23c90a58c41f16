"""Accuracy metrics and the evaluation report.

All arrays are numpy, in physical (unscaled) units, shaped [cases, timesteps, nodes].
The headline metric is the relative L2 error of each case's whole field, so one
number per case; `summarize_errors` reduces those to mean/median/max and the
positions of the worst and the typical case (the ones worth plotting).
"""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from modules.storage.atomic_files import replace_atomically
from modules.errors import DataError, SimulGenError

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


def summarize_errors(errors: np.ndarray) -> Dict[str, Any]:
    """Mean, median, max and min of per-case errors, plus where the worst and the typical case are.

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
    return {
        "count": int(values.size),
        "mean": float(np.mean(values)),
        "median": median,
        "max": float(np.max(values)),
        "min": float(np.min(values)),
        "argmax": int(np.argmax(values)),
        "argmedian": int(np.argsort(values, kind="stable")[(values.size - 1) // 2]),
    }


def _percent(value: float) -> str:
    return f"{100.0 * float(value):.2f} %"


def format_report_table(rows: Sequence[Tuple[str, str, Dict[str, Any]]]) -> str:
    """A fixed-width text table: model, split, mean, median, max (errors shown as percent, 2 decimals).

    Each row is (model name, split name, summary from `summarize_errors`); the
    summary holds fractions (0.0321) which are printed as percent ('3.21 %').
    """
    header = ("model", "split", "mean", "median", "max")
    body: List[Tuple[str, ...]] = [
        (str(name), str(split), _percent(summary["mean"]), _percent(summary["median"]), _percent(summary["max"]))
        for name, split, summary in rows
    ]
    widths = [max(len(row[column]) for row in [header] + body) for column in range(len(header))]
    # Text columns read best left-aligned, numbers right-aligned so the decimal points line up.
    def render(row: Tuple[str, ...]) -> str:
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(row))]
        return "  ".join(cells).rstrip()

    lines = [render(header), "  ".join("-" * width for width in widths)]
    lines.extend(render(row) for row in body)
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    """Let numpy scalars/arrays and paths into the JSON report; anything else is a programming error."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")


def _describe_os_error(error: OSError) -> str:
    reasons = {
        errno.ENOSPC: "disk full (no space left on device)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
    }
    return reasons.get(error.errno, error.strerror or str(error))


def _write_atomically(path: Path, text: str) -> None:
    """The report file via a temp file and a rename: readers see the previous report or the new one."""
    try:
        replace_atomically(Path(path), lambda handle: handle.write(text), "w")
    except OSError as error:
        raise SimulGenError(
            f"could not write report file {path}: {_describe_os_error(error)}; the previous file, if any, "
            "is unchanged. fix: free space on that disk or choose a writable output_dir, then rerun") from error


def write_report(path_json: Path, path_text: Path, report: Dict[str, Any], table: str) -> None:
    """Write the report as JSON (indent 2) and the table as text, each atomically.

    Both are serialised before anything touches the disk, so a report that cannot
    be represented (NaN, unknown types) writes nothing. Raises SimulGenError naming
    the file and the reason if the disk refuses (e.g. disk full).
    """
    try:
        json_text = json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as error:
        raise SimulGenError(f"could not write report file {path_json}: the report is not valid JSON ({error}); "
                            "expected plain numbers, strings, lists and dicts without NaN or infinity") from error
    text = table if table.endswith("\n") else table + "\n"
    _write_atomically(Path(path_json), json_text)
    _write_atomically(Path(path_text), text)
