"""Which design parameters the networks and Gaussian processes read as their logarithm (`log_parameters`).

Engineers sample a parameter log-uniformly when its effect is multiplicative: a diffusivity, a stiffness, a
viscosity spanning a factor of several. Standardised on its linear scale, such a column crowds its designs at the
low end, where the field changes fastest, and a smooth model (a Gaussian process's length scale, a small network)
stretches one resolution over both ends. Read as its logarithm the column is evenly spread again. Measured on the
demo (diffusivity log-uniform over 1e-5..6e-5, 16 test designs, pooled): POD + GP on the amplitude-scaled fields
0.0641 with the linear column, 0.0558 with its logarithm (validation 0.0305 / 0.0272).

`auto` decides from how the training designs are spread, not from their values' meaning: a column whose logarithm
is far more evenly spread over its range than the values themselves was sampled log-uniformly. The evenness is
the Kolmogorov-Smirnov distance from the uniform distribution over the column's range (scipy.stats.kstest).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import kstest

from modules.config.log_parameters import listed_columns
from modules.errors import DataError

MIN_LOG_SPAN = 3.0
"""auto reads a column as its logarithm only where its training values span at least this factor (max / min): over
a narrower range the logarithm is nearly linear and changes nothing worth a transform."""
EVENNESS_GAIN = 2.0
"""auto reads a column as its logarithm where its logarithm's distance from evenly spread is at most 1 / this of
the values' own. Measured on the whole tables: the development sweeps' columns 0.01-0.20 as values, 0.12-0.38 as
logarithms (the nearest call front-dev's x0, 0.20 / 0.15, not taken); the demo's log-uniform diffusivity 0.22 as
values, 0.01 as logarithms (0.19 / 0.05 on its 128 training designs, taken)."""


def unevenness(values: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of `values`, mapped onto [0, 1] by their range, from the uniform distribution
    (0: perfectly even; a constant column: 1)."""
    low, high = float(np.min(values)), float(np.max(values))
    if not high > low:
        return 1.0
    return float(kstest((np.asarray(values, dtype=np.float64) - low) / (high - low), "uniform").statistic)


def is_log_spaced(values: np.ndarray) -> bool:
    """Whether a column's values are positive, span MIN_LOG_SPAN or more, and are far more evenly spread as
    logarithms than as they are (sampled log-uniformly)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3 or not np.all(values > 0) or values.max() < MIN_LOG_SPAN * values.min():
        return False
    return EVENNESS_GAIN * unevenness(np.log(values)) <= unevenness(values)


def log_columns(setting: str, designs: np.ndarray, train_indices: Sequence[int],
                keep_linear: Iterable[int] = ()) -> List[int]:
    """The 0-based parameter columns read as logarithms: `setting` resolved on the training designs [cases, p].

    keep_linear: columns auto leaves linear whatever their spread (an amplitude parameter: the field is
    proportional to the value itself). An explicit list must name columns whose every design is positive."""
    if designs.ndim != 2 or setting == "none":
        return []
    if setting == "auto":
        train = designs[np.asarray(train_indices, dtype=np.int64)]
        linear = set(keep_linear)
        return [column for column in range(designs.shape[1])
                if column not in linear and np.all(designs[:, column] > 0) and is_log_spaced(train[:, column])]
    columns = listed_columns(setting)
    found = first_without_logarithm(designs, columns)
    if found is not None:
        design, column = found
        raise DataError(f"log_parameters {setting}: parameter {column + 1} of design {design + 1} is "
                        f"{designs[design, column]:g}; only a positive value has a logarithm\n"
                        f"    fix: leave column {column + 1} out of log_parameters in condition.txt (or use auto), "
                        f"or correct that design in the parameter table")
    return columns


def first_without_logarithm(designs: np.ndarray, columns: Sequence[int]) -> Optional[Tuple[int, int]]:
    """(design, column), 0-based, of the first value in `columns` of designs [cases, p] that is not positive;
    None when every one has a logarithm."""
    for column in columns:
        bad = np.flatnonzero(~(designs[:, column] > 0))
        if len(bad):
            return int(bad[0]), int(column)
    return None


def describe_columns(columns: Sequence[int]) -> str:
    """'parameters 2, 5' / 'parameter 5' / 'no parameter' (1-based, for logs)."""
    if not columns:
        return "no parameter"
    return f"parameter{'s' if len(columns) > 1 else ''} {', '.join(str(column + 1) for column in columns)}"


def spread_text(designs: np.ndarray, train_indices: Sequence[int], columns: Sequence[int]) -> str:
    """For the log: each column's unevenness as values and as logarithms on the training designs."""
    train = designs[np.asarray(train_indices, dtype=np.int64)]
    return "; unevenness of the training designs as values / as logarithms: " + ", ".join(
        f"parameter {column + 1} {unevenness(train[:, column]):.2f} / {unevenness(np.log(train[:, column])):.2f}"
        for column in columns)
