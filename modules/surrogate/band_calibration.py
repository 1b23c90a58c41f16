"""The uncertainty band of `predict --samples K`, calibrated by split-conformal prediction.

The sampled band (decodes of latent codes drawn around the prediction with the conditioner's validation
error) has the right shape but not the right width: nothing makes prediction +- 1.645 std cover 90 % of
what a simulation would give. So its width is scaled once, on cases the conditioner never trained on: the
normalised residual |truth - prediction| / std of every value of those cases, and the scale is the quantile
that covers the nominal share of them (split-conformal, Vovk et al. 2005; Angelopoulos & Bates 2021). The
band is then prediction +- scale x std. Values within a case are correlated, so the coverage of a few held-out
cases scatters around the nominal share; the report measures it on the test cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

NOMINAL_COVERAGE = 0.9
SCORES_PER_BATCH = 200_000
"""Normalised residuals kept per batch of cases (a seeded subsample): the quantile needs no more, and a
seed-size sweep has ~10^9 values per batch."""


@dataclass(frozen=True)
class BandCalibration:
    scale: float
    """Band half-width in units of the sampled standard deviation."""
    nominal: float
    """The share of values the band is calibrated to cover."""
    cases: int
    """Calibration cases it was fitted on."""
    covered_on_calibration: Optional[float] = None
    """Share of the calibration cases' scored values inside the band: their coverage, known without a second
    pass over them (None in bundles written before it was kept)."""


def band_std(std: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The sampled std [k, T, N] of each design times its band width [k] (models/design_spread.py): what the
    band's scale multiplies. The width scales the std, not the draws: with the draws widened instead, the
    prediction decoder's fields spread far more than in proportion on the advection sweep (mean test half-width
    10.6x the constant band's, against 1.5x scaling the std, for the same 90.6 % test coverage)."""
    return std * np.asarray(widths, dtype=std.dtype)[:, None, None]


def std_floor(std: np.ndarray) -> float:
    """Where the samples do not vary (e.g. clamped nodes) a residual still needs a finite score."""
    return max(1e-6 * float(np.sqrt(np.mean(np.square(std, dtype=np.float64)))), 1e-30)


def normalised_residuals(truth: np.ndarray, center: np.ndarray, std: np.ndarray, floor: float,
                         keep: Optional[int] = SCORES_PER_BATCH, seed: int = 0) -> np.ndarray:
    """|truth - center| / max(std, floor), flattened; a seeded subsample of `keep` values when there are more."""
    scores = (np.abs(np.asarray(truth, np.float64) - center) / np.maximum(std, floor)).ravel()
    if keep is not None and scores.size > keep:
        scores = scores[np.random.default_rng(seed).choice(scores.size, keep, replace=False)]
    return scores


def conformal_scale(scores: np.ndarray, nominal: float = NOMINAL_COVERAGE) -> float:
    """The ceil((n + 1) nominal)-th smallest of the n scores: the split-conformal band width."""
    if scores.size == 0:
        raise ValueError("conformal_scale: no calibration scores")
    if not 0.0 < nominal < 1.0:
        raise ValueError(f"conformal_scale: nominal coverage must be in (0, 1), got {nominal}")
    rank = min(scores.size, math.ceil((scores.size + 1) * nominal))  # the rank-th smallest score
    return float(np.partition(scores, rank - 1)[rank - 1])


def covered_share(truth: np.ndarray, center: np.ndarray, std: np.ndarray, scale: float, floor: float) -> float:
    """Share of values inside center +- scale x max(std, floor)."""
    inside = np.abs(np.asarray(truth, np.float64) - center) <= scale * np.maximum(std, floor)
    return float(np.mean(inside))
