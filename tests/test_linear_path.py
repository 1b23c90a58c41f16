import torch

from modules.models.linear_path import fit_coefficient_pca, fit_linear_path, project_cases, spatial_pod


def _cases(num_cases: int, num_nodes: int, num_timesteps: int) -> torch.Tensor:
    torch.manual_seed(0)
    profile = torch.sin(torch.linspace(0, 3, num_nodes))[None, :, None]
    decay = torch.logspace(0, -3, num_nodes).flip(0)[None, :, None]
    return torch.randn(num_cases, num_nodes, num_timesteps) * decay + torch.randn(num_cases, 1, num_timesteps) * profile


def _svd_modes(cases: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights.double() / weights.double().pow(2).mean().sqrt()
    snapshots = (cases.double() * weights[None, :, None]).permute(0, 2, 1).reshape(-1, cases.shape[1])
    return torch.linalg.svd(snapshots, full_matrices=False)[2].T, snapshots


def _projection_gap(modes: torch.Tensor, reference: torch.Tensor, snapshots: torch.Tensor, count: int) -> float:
    a, b = modes[:, :count], reference[:, :count]
    return float((a @ (a.T @ snapshots.T) - b @ (b.T @ snapshots.T)).norm() / snapshots.norm())


def test_both_routes_span_the_svd_modes_in_the_weighted_metric():
    weights = torch.rand(300) + 0.5
    for num_cases, num_nodes in ((2, 300), (40, 300)):  # 20 snapshots < 300 nodes (Gram), 400 > 300 (covariance)
        cases = _cases(num_cases, num_nodes, 10)
        modes = spatial_pod(cases, 12, weights)
        reference, snapshots = _svd_modes(cases, weights)
        assert torch.allclose(modes.T @ modes, torch.eye(12, dtype=torch.float64), atol=1e-8)
        for count in (1, 5, 12):
            assert _projection_gap(modes, reference, snapshots, count) < 1e-5


def test_rank_deficient_snapshots_leave_zero_columns():
    cases = _cases(1, 50, 4)  # 4 snapshots: at most 4 modes
    modes = spatial_pod(cases, 8)
    assert torch.count_nonzero(modes.abs().sum(dim=0) > 0) == 4
    assert torch.all(modes[:, 4:] == 0)


def test_coefficient_pca_of_all_cases_reconstructs_them_with_enough_components():
    cases = _cases(6, 40, 5)
    spatial = spatial_pod(cases, 40)
    projected = project_cases(cases, spatial)
    init = fit_coefficient_pca(projected, spatial, 5)  # 6 centred cases have rank 5
    flat = projected.reshape(6, -1)
    coefficients = (flat - init.coefficient_mean) @ init.coefficient_basis
    rebuilt = init.coefficient_mean + coefficients @ init.coefficient_basis.T
    assert torch.allclose(rebuilt, flat, atol=1e-8)
    assert torch.allclose(coefficients.std(dim=0), init.coefficient_scale, rtol=1e-6)


def test_fit_linear_path_is_pod_then_coefficient_pca():
    cases = _cases(5, 30, 6)
    init = fit_linear_path(cases, 8, 3)
    spatial = spatial_pod(cases, 8)
    again = fit_coefficient_pca(project_cases(cases, spatial), spatial, 3)
    assert torch.equal(init.spatial_basis, again.spatial_basis)
    assert torch.allclose(init.coefficient_basis.abs(), again.coefficient_basis.abs())
