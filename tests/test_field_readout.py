import copy

import numpy as np
import pytest
import torch

from modules.data.scaling import NodeScaler
from modules.models.spatial_basis import SpatialBasis
from modules.surrogate.field_readout import FieldReadout

pytestmark = pytest.mark.usefixtures("single_thread")

NODES, MODES, TIMESTEPS = 30, 5, 7


def basis_and_scaler():
    """A basis with uneven node weights (one node of weight 0, read out as its scaled 0) and a fitted min-max
    scaler whose first node is constant."""
    generator = torch.Generator().manual_seed(0)
    modes = torch.linalg.qr(torch.randn(NODES, MODES, generator=generator, dtype=torch.float64)).Q.float()
    weights = torch.rand(NODES, generator=generator, dtype=torch.float64) + 0.5
    weights[3] = 0.0
    basis = SpatialBasis(NODES, MODES)
    basis.set_modes(modes, weights, scale=0.37)
    snapshots = 300.0 + 50.0 * np.random.default_rng(0).standard_normal((2, 1, NODES))
    snapshots[:, :, 0] = 12.5
    return basis, NodeScaler().fit_arrays(snapshots)


def step_by_step(basis, scaler, coefficients, channels=None):
    """The readout, the scaler's inverse and the transpose to [k, T, N], one after another, in float64."""
    scaled = copy.deepcopy(basis).double().readout(coefficients.double())
    fields = scaler.inverse(scaled, node_axis=1).transpose(1, 2).numpy()
    return fields if channels is None else fields[:, :, channels]


def test_the_folded_readout_equals_the_readout_then_the_scaler_inverse():
    basis, scaler = basis_and_scaler()
    coefficients = torch.randn(4, MODES, TIMESTEPS, generator=torch.Generator().manual_seed(1))
    readout = FieldReadout(basis, scaler, torch.device("cpu"))
    out = np.empty((4, TIMESTEPS, NODES), np.float32)
    readout.write(coefficients, out)
    expected = step_by_step(basis, scaler, coefficients)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    assert np.all(out[:, :, 0] == np.float32(12.5))  # a constant node comes back as its constant
    assert np.allclose(out[:, :, 3], (scaler.data_max[3] + scaler.data_min[3]) / 2)  # weight 0: scaled 0


def test_a_channel_subset_gives_those_columns_of_the_whole_field():
    basis, scaler = basis_and_scaler()
    coefficients = torch.randn(2, MODES, TIMESTEPS, generator=torch.Generator().manual_seed(2))
    channels = np.array([29, 3, 11])
    whole = np.empty((2, TIMESTEPS, NODES), np.float32)
    FieldReadout(basis, scaler, torch.device("cpu")).write(coefficients, whole)
    part_readout = FieldReadout(basis, scaler, torch.device("cpu"), channels)
    part = np.empty((2, TIMESTEPS, 3), np.float32)
    part_readout.write(coefficients, part)
    assert part_readout.channels == 3
    np.testing.assert_allclose(part, whole[:, :, channels], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(part, step_by_step(basis, scaler, coefficients, channels), rtol=1e-5, atol=1e-4)


def test_it_writes_into_a_slice_of_the_callers_array_and_nowhere_else():
    basis, scaler = basis_and_scaler()
    readout = FieldReadout(basis, scaler, torch.device("cpu"))
    out = np.full((5, TIMESTEPS, NODES), -1.0, np.float32)
    coefficients = torch.randn(2, MODES, TIMESTEPS, generator=torch.Generator().manual_seed(3))
    readout.write(coefficients, out[1:3])
    assert np.all(out[[0, 3, 4]] == -1.0) and not np.any(out[1:3] == -1.0)
    np.testing.assert_allclose(out[1:3], step_by_step(basis, scaler, coefficients), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, dtype", [((2, TIMESTEPS, NODES - 1), np.float32), ((2, TIMESTEPS, NODES), np.float64)],
                         ids=["wrong-shape", "wrong-dtype"])
def test_an_output_of_the_wrong_shape_or_type_is_refused(shape, dtype):
    basis, scaler = basis_and_scaler()
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
        FieldReadout(basis, scaler, torch.device("cpu")).write(torch.zeros(2, MODES, TIMESTEPS), np.empty(shape, dtype))
