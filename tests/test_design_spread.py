"""The band's design spread: a Gaussian process's posterior std, relative to the validation designs'."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from modules.models.design_gp import fit_gaussian_processes
from modules.models.design_spread import MIN_FACTOR, DesignSpread, fit_design_spread


def _sweep(cases: int = 40, seed: int = 0):
    """Designs with features of very different units, and coefficients [cases, 3, 4] driven by the first."""
    rng = np.random.default_rng(seed)
    designs = rng.uniform(size=(cases, 3)) * np.array([1.0, 10.0, 100.0])
    pattern = rng.normal(size=(1, 3, 4))
    coefficients = np.sin(3 * designs[:, :1, None]) * pattern + 0.01 * rng.normal(size=(cases, 3, 4))
    return torch.as_tensor(designs), torch.as_tensor(coefficients)


def test_the_posterior_std_is_scikit_learns():
    designs, coefficients = _sweep()
    train = designs[:30].numpy()
    scaler = StandardScaler().fit(train)
    (process,), _ = fit_gaussian_processes(scaler.transform(train), coefficients[:30, 0, :1].numpy(), "test")
    spread = DesignSpread.from_sklearn(scaler, process, designs[30:].numpy())
    queries = np.random.default_rng(1).uniform(size=(7, 3)) * np.array([2.0, 20.0, 200.0])
    _, expected = process.predict(scaler.transform(queries), return_std=True)
    # normalize_y: scikit-learn's std is in the target's units, the spread's in the normalised units
    got = spread.posterior_std(torch.as_tensor(queries)).numpy() * float(np.ravel(process._y_train_std)[0])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(spread.reference) == pytest.approx(float(spread.posterior_std(designs[30:]).mean()))


def test_the_band_widens_away_from_the_training_designs_and_keeps_a_floor_at_them():
    designs, coefficients = _sweep()
    spread = fit_design_spread(designs, coefficients, np.arange(30), np.arange(30, 40))
    inside = torch.tensor([[0.5, 5.0, 50.0]])
    outside = torch.tensor([[3.0, 5.0, 50.0]])  # far along the feature the fields depend on
    assert float(spread(outside)) > 2 * float(spread(inside))
    at_training = spread(designs[:30])
    assert float(at_training.min()) >= MIN_FACTOR - 1e-7
    reference = spread.posterior_std(designs[30:]) / spread.reference
    assert float(reference.mean()) == pytest.approx(1.0)


def test_the_saved_spread_gives_the_same_factors_and_a_damaged_one_is_refused():
    designs, coefficients = _sweep()
    spread = fit_design_spread(designs, coefficients, np.arange(30), np.arange(30, 40))
    state = spread.state_dict()
    torch.testing.assert_close(DesignSpread.from_state_dict(state)(designs), spread(designs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="inconsistent"):
        DesignSpread.from_state_dict({**state, "cholesky": state["cholesky"][:-1]})
    with pytest.raises(ValueError, match="reference"):
        DesignSpread.from_state_dict({**state, "reference": torch.tensor(0.0)})
