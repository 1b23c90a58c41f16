"""The --samples band: split-conformal width, and the share it covers on fresh data."""
from __future__ import annotations

import numpy as np
import pytest

from modules.surrogate.band_calibration import (conformal_scale, covered_share, normalised_residuals, std_floor)


def gaussian_cases(rng, count: int, true_scale: float):
    """Truth scattered around the prediction by true_scale x the sampled std: the sampled band is too narrow
    (true_scale > 1) or too wide (< 1) by that factor."""
    std = rng.uniform(0.1, 2.0, size=(count, 5, 30))
    center = rng.normal(size=std.shape)
    truth = center + true_scale * std * rng.normal(size=std.shape)
    return truth, center, std


@pytest.mark.parametrize("true_scale", [0.4, 1.0, 3.0])
def test_the_calibrated_band_covers_the_nominal_share_of_fresh_gaussian_data(true_scale):
    rng = np.random.default_rng(0)
    truth, center, std = gaussian_cases(rng, 20, true_scale)
    scale = conformal_scale(normalised_residuals(truth, center, std, std_floor(std)), 0.9)
    assert scale == pytest.approx(1.645 * true_scale, rel=0.05)  # the Gaussian 90 % quantile of |z|
    fresh = gaussian_cases(rng, 20, true_scale)
    assert 0.88 < covered_share(*fresh, scale, std_floor(fresh[2])) < 0.92
    # The raw band of +-1.645 std would have covered far from 90 % unless the samples were already right.
    raw = covered_share(*fresh, 1.645, std_floor(fresh[2]))
    assert (abs(raw - 0.9) < 0.02) == (true_scale == 1.0)


def test_the_conformal_quantile_has_the_finite_sample_correction():
    scores = np.arange(1.0, 11.0)  # 10 scores: the ceil(11 x 0.9) = 10th smallest
    assert conformal_scale(scores, 0.9) == 10.0
    assert conformal_scale(scores, 0.5) == 6.0  # ceil(5.5) = 6th
    with pytest.raises(ValueError, match="no calibration scores"):
        conformal_scale(np.array([]))
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        conformal_scale(scores, 1.0)


def test_values_whose_samples_never_vary_get_a_finite_score_and_large_sets_are_subsampled():
    std = np.array([[0.0, 1.0]])
    scores = normalised_residuals(np.array([[0.0, 1.0]]), np.zeros((1, 2)), std, std_floor(std))
    assert np.all(np.isfinite(scores)) and scores[0] == 0.0 and scores[1] == 1.0
    many = normalised_residuals(np.ones(1000), np.zeros(1000), np.ones(1000), 1e-9, keep=100)
    assert many.shape == (100,)
