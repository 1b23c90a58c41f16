import pytest
import torch

from modules.models.spatial_basis import SpatialBasis, fit_spatial_modes

pytestmark = pytest.mark.usefixtures("single_thread")


def low_rank_cases(num_cases: int, num_nodes: int, num_timesteps: int, rank: int, seed: int = 0) -> torch.Tensor:
    """[k, N, T] cases whose snapshots all lie in one rank-`rank` spatial subspace."""
    generator = torch.Generator().manual_seed(seed)
    spatial = torch.randn(num_nodes, rank, generator=generator)
    amplitudes = torch.randn(num_cases, rank, num_timesteps, generator=generator)
    return 0.1 * torch.einsum("nr,krt->knt", spatial, amplitudes)


@pytest.mark.parametrize("num_nodes", [12, 60], ids=["covariance-route", "gram-route"])
def test_modes_are_orthonormal_and_hold_every_snapshot_of_a_low_rank_sweep(num_nodes):
    cases = low_rank_cases(5, num_nodes, 4, rank=3)  # 20 snapshots: 12 nodes use [N x N], 60 use [kT x kT]
    modes = fit_spatial_modes(cases, 5)
    assert modes.modes.shape == (num_nodes, 5)
    kept = modes.modes[:, :3]
    assert torch.allclose(kept.T @ kept, torch.eye(3, dtype=torch.float64), atol=1e-8)
    # Beyond the rank only rounding remains (the Gram route sums float32 products).
    assert torch.all(modes.energy[3:] <= 1e-6 * modes.energy[0])
    assert torch.all(modes.energy[:-1] >= modes.energy[1:])
    assert modes.energy.sum().item() == pytest.approx(modes.total_energy, rel=1e-6)
    basis = SpatialBasis(num_nodes, 3)
    basis.set_modes(kept.float(), None, 0.5)
    assert torch.allclose(basis.readout(basis.project(cases)), cases, atol=1e-5)


def test_both_routes_find_the_same_modes():
    cases = low_rank_cases(3, 16, 6, rank=4, seed=1)  # 18 snapshots > 16 nodes: covariance route
    by_covariance = fit_spatial_modes(cases, 4)
    by_gram = fit_spatial_modes(cases[:2], 4)  # 12 snapshots < 16 nodes: Gram route, same subspace
    overlap = by_covariance.modes.T @ by_gram.modes
    assert torch.allclose(torch.linalg.svdvals(overlap), torch.ones(4, dtype=torch.float64), atol=1e-6)


def test_mode_count_for_an_energy_share():
    cases = low_rank_cases(6, 30, 5, rank=4, seed=2)
    modes = fit_spatial_modes(cases, 6)
    shares = torch.cumsum(modes.energy, 0) / modes.total_energy
    assert modes.count_for(1.0 - 1e-9) == 4
    assert modes.count_for(float(shares[1]) - 1e-6) == 2
    assert modes.count_for(0.0) == 1
    assert modes.leading(2).modes.shape == (30, 2)


def test_weighted_squared_error_splits_into_coefficient_error_plus_what_no_mode_holds():
    # sum_{n,t} w_n^2 (x_hat - x)^2 = s^2 ||a_hat - a||^2 + R for any coefficients a_hat: the identity that
    # lets the VAE train on [C, T] instead of [N, T].
    cases = low_rank_cases(4, 25, 6, rank=8, seed=3)
    weights = torch.rand(25) + 0.5
    modes = fit_spatial_modes(cases, 5, weights)
    basis = SpatialBasis(25, 5)
    basis.set_modes(modes.modes.float(), weights, 0.3)
    unit = basis.weights.double()  # the weights as the basis keeps them (unit RMS)
    a = basis.project(cases).double()
    a_hat = a + 0.05 * torch.randn_like(a)
    x_hat = basis.readout(a_hat.float()).double()
    direct = ((x_hat - cases.double()).square() * unit.square()[None, :, None]).sum()
    residual = ((basis.readout(basis.project(cases)).double() - cases.double()).square()
                * unit.square()[None, :, None]).sum()
    assert residual > 0  # 8 directions in the data, 5 modes
    assert direct.item() == pytest.approx((0.3 ** 2 * (a_hat - a).square().sum() + residual).item(), rel=1e-4)


def test_nodes_of_weight_zero_read_out_as_zero():
    basis = SpatialBasis(4, 1)
    basis.set_modes(torch.tensor([[1.0], [0.0], [0.0], [0.0]]), torch.tensor([1.0, 0.0, 1.0, 1.0]), 1.0)
    readout = basis.readout(torch.ones(1, 1, 2))
    assert torch.all(readout[0, 1] == 0) and torch.all(torch.isfinite(readout))


def test_modes_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"this basis holds \(4, 2\)"):
        SpatialBasis(4, 2).set_modes(torch.zeros(4, 3), None, 1.0)
