"""Training on spatial-mode coefficients gives the full-field loss, gradients and selection metric."""
from __future__ import annotations

import json
from typing import Optional

import pytest
import torch

from modules.config.schema import AugmentationConfig, ModelConfig, PhysicsLossConfig, RunConfig, TrainConfig
from modules.config.legacy_files import load_run_config
from modules.errors import ConfigError
from modules.models.spatial_basis import fit_spatial_modes, unit_rms_weights
from modules.training.losses import physical_node_weights
from modules.training.objectives import VAEObjective
from modules.training.projected_training import (ProjectedCases, ProjectedSweep, ProjectedVAEObjective,
                                                 physical_per_weighted, project_fields, sample_timesteps)
from modules.data.scaling import SCALED_LIMIT
from modules.models.vae import HierarchicalVAE
from tiny_sweep import load_entry, tiny_condition, tiny_preset

NUM_CASES, NUM_NODES, NUM_TIMESTEPS, NUM_MODES, NUM_DESIGNS = 10, 48, 6, 8, 2
CONSTANT_NODE = 5  # half-range 0: weight 0, decoded as 0

pytestmark = pytest.mark.usefixtures("single_thread")


class Setup:
    """A tiny VAE with a design prior on a fitted basis, every weight moved off its initialisation, and both
    objectives (full fields and coefficients) on the same cases."""

    def __init__(self, dtype: torch.dtype, rank: Optional[int] = None, recon_iterations: int = 1):
        torch.manual_seed(0)
        self.model = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2,
                                                 decoder_width=16, decoder_depth=2),
                                     NUM_NODES, NUM_TIMESTEPS, NUM_MODES, NUM_DESIGNS)
        half_range = torch.rand(NUM_NODES, dtype=torch.float64) + 0.2
        half_range[CONSTANT_NODE] = 0.0
        fields = (torch.rand(NUM_CASES, NUM_NODES, NUM_TIMESTEPS, dtype=torch.float64) - 0.5) * 2 * SCALED_LIMIT
        if rank is not None:  # fewer snapshot modes than the basis holds
            modes = torch.randn(NUM_NODES, rank, dtype=torch.float64)
            fields = torch.einsum("nr,krt->knt", modes, torch.randn(NUM_CASES, rank, NUM_TIMESTEPS, dtype=torch.float64))
        fields[:, CONSTANT_NODE] = 0.0
        basis_modes = fit_spatial_modes(fields, NUM_MODES, half_range).modes
        if rank is not None:  # as training keeps them (vae_stage.fit_modes): never more modes than the rank
            basis_modes = basis_modes[:, :rank]
            self.model = HierarchicalVAE(self.model.cfg, NUM_NODES, NUM_TIMESTEPS, rank, NUM_DESIGNS)
        self.model = self.model.to(dtype)
        self.model.basis.set_modes(basis_modes.to(dtype), half_range, 0.7)
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        self.fields = fields.to(dtype)
        # float64 uses the basis's own metric w^2 exactly; float32 the production weights (w^2 rounded to float32).
        self.weights = unit_rms_weights(NUM_NODES, half_range).pow(2) if dtype == torch.float64 else \
            physical_node_weights(half_range)
        self.to_physical = (torch.randn(NUM_NODES, dtype=dtype), (half_range / SCALED_LIMIT).to(dtype))
        coefficients, residual, norm_sq = project_fields(self.model.basis, self.fields, self.weights, self.to_physical)
        self.projection = ProjectedSweep(coefficients, residual, norm_sq, 0.7,
                                         physical_per_weighted(self.weights, self.to_physical), NUM_NODES)
        self.designs = torch.randn(NUM_CASES, NUM_DESIGNS, dtype=dtype)
        energy = self.projection.energy_per_element(range(NUM_CASES))
        train = TrainConfig(recon_weight=100.0, beta_target=1e-2, recon_iterations=recon_iterations,
                            timesteps_per_case=0)
        self.full = VAEObjective(train, self.weights, self.to_physical, designs=self.designs, energy_per_element=energy)
        self.projected = ProjectedVAEObjective(train, self.projection, self.designs, energy)

    def batches(self, cases):
        index = torch.as_tensor(cases)
        return (self.fields[index], index), (self.projection.coefficients[index], index)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("rank", [None, 3])
def test_projected_squared_error_is_the_node_space_one(dtype, tolerance, rank):
    setup = Setup(dtype, rank)
    cases = [0, 3, 4, 7]
    (fields, index), (coefficients, _) = setup.batches(cases)
    with torch.no_grad():
        full = setup.model(fields, use_mean=True)
        projected = setup.model(coefficients, use_mean=True, projected=True)
    assert projected.recon.shape == (4, rank or NUM_MODES, NUM_TIMESTEPS)
    node_space = (setup.weights[None, :, None] * (full.recon - fields) ** 2).sum(dim=(1, 2)).double()
    constant = setup.projection.residual[index]
    squared = setup.projected.squared_errors(projected.recon, coefficients, index, NUM_TIMESTEPS)
    torch.testing.assert_close(squared, node_space, rtol=tolerance, atol=0)
    # At rank 3 the modes hold every case, so nothing is left for the constant.
    assert (constant > 0.01 * node_space).all() if rank is None else (constant < tolerance * node_space).all()


def test_the_error_on_a_sample_of_timesteps_estimates_the_whole_transient():
    setup = Setup(torch.float64)
    (_, index), (coefficients, _) = setup.batches([1, 2, 5])
    with torch.no_grad():
        recon = setup.model(coefficients, use_mean=True, projected=True).recon
    whole = setup.projected.squared_errors(recon, coefficients, index, NUM_TIMESTEPS)
    # Each single timestep, scaled to the transient: their mean is the whole (an unbiased estimate).
    singles = torch.stack([setup.projected.squared_errors(recon[:, :, [t]], coefficients[:, :, [t]], index,
                                                          NUM_TIMESTEPS) for t in range(NUM_TIMESTEPS)])
    torch.testing.assert_close(singles.mean(dim=0), whole, rtol=1e-10, atol=0)
    assert singles.std(dim=0).min() > 0  # and the single estimates do differ


def test_timestep_samples_are_distinct_per_case_and_none_when_they_cover_the_transient():
    torch.manual_seed(0)
    sample = sample_timesteps(5, 10, 4, torch.device("cpu"))
    assert sample.shape == (5, 4)
    assert all(len(set(row.tolist())) == 4 for row in sample) and sample.min() >= 0 and sample.max() < 10
    assert len({tuple(row.tolist()) for row in sample}) > 1
    assert sample_timesteps(5, 10, 0, torch.device("cpu")) is None
    assert sample_timesteps(5, 10, 10, torch.device("cpu")) is None


# AdamW (the trainer's optimiser) in float64. In float32 SGD with lr 1 (the update is the gradient): Adam's first
# step (about lr x the sign of each gradient) would magnify float32 rounding on gradients that are ~0 into
# differences of lr, and a small lr would drown the update in the float32 rounding of the weights themselves.
@pytest.mark.parametrize("dtype,optimizer_class,learning_rate",
                         [(torch.float64, torch.optim.AdamW, 1e-3), (torch.float32, torch.optim.SGD, 1.0)])
def test_one_optimizer_step_moves_the_weights_exactly_as_full_fields_do(dtype, optimizer_class, learning_rate):
    setup = Setup(dtype, recon_iterations=2)
    full_batch, projected_batch = setup.batches([1, 2, 5, 8])
    start = {name: value.clone() for name, value in setup.model.state_dict().items()}
    updates, metrics = [], []
    for objective, batch in ((setup.full, full_batch), (setup.projected, projected_batch)):
        setup.model.load_state_dict(start)
        setup.model.zero_grad(set_to_none=True)
        setup.model.train()
        optimizer = optimizer_class([p for p in setup.model.parameters() if p.requires_grad], lr=learning_rate)
        torch.manual_seed(7)
        loss, values = objective(setup.model, batch, epoch=0)
        loss.backward()
        optimizer.step()
        updates.append({name: value - start[name] for name, value in setup.model.state_dict().items()})
        metrics.append(values)
    largest = max(float(update.abs().max()) for update in updates[0].values())
    for name in start:
        torch.testing.assert_close(updates[1][name], updates[0][name], rtol=1e-5, atol=1e-5 * largest, msg=name)
    assert float(updates[0]["encoder.main_head.weight"].abs().max()) > 0.01 * largest  # the step moved the weights
    assert float(updates[0]["design_prior.0.weight"].abs().max()) > 0  # the design prior learns too
    assert float(updates[1]["basis.modes"].abs().max()) == 0.0  # and never the frozen basis
    for key in ("loss", "recon", "kl", "beta", "recon_design", "alignment"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-5), key


# VAEObjective.relative_errors rounds the reconstruction to float32 even in a float64 model.
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_projected_selection_metric_is_the_reports_relative_error(dtype, tolerance):
    setup = Setup(dtype, recon_iterations=2)
    full_batch, projected_batch = setup.batches([0, 2, 6, 9])
    setup.model.eval()
    design = setup.designs[full_batch[1]]
    with torch.no_grad():
        expected = setup.full.relative_errors(setup.model(full_batch[0], use_mean=True, design=design),
                                              full_batch[0])
        found = setup.projected.relative_errors(
            setup.model(projected_batch[0], use_mean=True, projected=True, design=design), *projected_batch)
        _, full_metrics = setup.full(setup.model, full_batch, epoch=3)
        _, projected_metrics = setup.projected(setup.model, projected_batch, epoch=3)
        _, projected_again = setup.projected(setup.model, projected_batch, epoch=3)
    assert set(expected) == set(found) == {"reconstruction", "design", "selection"}
    for key in expected:
        assert found[key] == pytest.approx(expected[key], rel=tolerance), key
        assert projected_metrics[key] == pytest.approx(expected[key], rel=tolerance), key
    assert 0.01 < expected["reconstruction"] < 10
    assert projected_metrics["selection"] == pytest.approx(full_metrics["selection"], rel=tolerance)
    # Validation decodes once at the posterior means: its loss is deterministic and the same on both paths.
    assert projected_again == projected_metrics
    for key in ("loss", "recon", "kl", "recon_design", "alignment"):
        assert projected_metrics[key] == pytest.approx(full_metrics[key], rel=tolerance), key


def test_projected_cases_serve_each_case_with_its_index():
    coefficients = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    cases = ProjectedCases(coefficients, [4, 1])
    assert len(cases) == 2 and cases.device == torch.device("cpu")
    item, index = cases[0]
    assert index == 4 and torch.equal(item, coefficients[4])


def test_config_rules_name_every_conflict_with_its_fix():
    config = RunConfig(train=TrainConfig(pod_projected_training=True, loss_type=2, physical_weighting=False),
                       augmentation=AugmentationConfig(node_mask_probability=0.1, time_warp_probability=0.2),
                       physics=PhysicsLossConfig(temporal_weight=0.1))
    found = [(problem.key, problem.message, problem.fix) for problem in config.problems()
             if problem.key == "train.pod_projected_training"]
    assert found == [
        ("train.pod_projected_training", "needs Loss_type 1 (MSE), got 2: only a squared error reduces exactly to "
         "the POD coefficients", "set Loss_type 1, or pod_projected_training 0"),
        ("train.pod_projected_training", "needs physical_weighting 1: the POD modes are orthonormal in the "
         "physically weighted metric, so only that loss reduces exactly to their coefficients",
         "set physical_weighting 1, or pod_projected_training 0"),
        ("train.pod_projected_training", "cannot be combined with node-space augmentation "
         "(aug_node_mask_probability, aug_time_warp_probability > 0): augmented fields change every step, so "
         "their projection cannot be computed once",
         "set aug_node_mask_probability and aug_time_warp_probability to 0, or pod_projected_training 0"),
        ("train.pod_projected_training", "cannot be combined with physics terms (physics_temporal_weight, "
         "physics_spatial_weight or physics_conservation_weight > 0): they need the full reconstructed fields",
         "set the physics_*_weight keys to 0, or pod_projected_training 0"),
    ]
    defaults = RunConfig(train=TrainConfig(pod_projected_training=True)).problems()
    assert not [problem for problem in defaults if "pod_projected_training" in problem.key]


def test_coefficients_are_the_default_and_full_fields_serve_what_needs_them():
    assert RunConfig().trains_on_coefficients
    assert not RunConfig(train=TrainConfig(loss_type=2)).trains_on_coefficients
    assert not RunConfig(physics=PhysicsLossConfig(temporal_weight=0.1)).trains_on_coefficients
    assert not RunConfig(augmentation=AugmentationConfig(noise_probability=0.5)).trains_on_coefficients
    assert not RunConfig(train=TrainConfig(pod_projected_training=False)).trains_on_coefficients


def test_a_conflict_points_at_the_condition_line(tmp_path):
    (tmp_path / "preset.txt").write_text(tiny_preset())
    condition = tmp_path / "condition.txt"
    condition.write_text(tiny_condition(tmp_path / "data", extra="pod_projected_training\t1\nphysical_weighting\t0\n"))
    line = condition.read_text().splitlines().index("pod_projected_training\t1") + 1
    with pytest.raises(ConfigError) as error:
        load_run_config(tmp_path / "preset.txt", condition)
    assert f"{condition}:{line}, key 'pod_projected_training': needs physical_weighting 1" in str(error.value)
    assert "fix: set physical_weighting 1, or pod_projected_training 0" in str(error.value)


def test_a_projected_run_trains_like_a_full_field_run(tmp_path):
    entry = load_entry("simulgen_entry_projected")
    (tmp_path / "preset.txt").write_text(tiny_preset())
    reports = {}
    for name, extra in (("full", "pod_projected_training\t0\n"), ("projected", "pod_projected_training\t1\n")):
        condition = tmp_path / f"{name}.txt"
        condition.write_text(tiny_condition(tmp_path / "data", epochs=3, lc_epochs=1,
                                            extra=extra + "timesteps_per_case\t0\nrefine_steps\t0\n"))
        out = tmp_path / name
        assert entry.main(["--preset-file", str(tmp_path / "preset.txt"), "--condition", str(condition),
                           "--device", "cpu", "--quiet", "--out", str(out)]) == 0
        reports[name] = json.loads((out / "report.json").read_text())["vae"]
        log = (out / "train_log.txt").read_text()
        assert ("per case instead of [64 x 8]" in log) == (name == "projected")
    full, projected = (reports[name]["relative_l2"]["vae"]["val"]["mean"] for name in ("full", "projected"))
    # Same seed, same batches, same gradients up to rounding: the two runs end at the same error.
    assert projected == pytest.approx(full, rel=1e-3)
    assert reports["projected"]["training"]["best_val_loss"] == \
        pytest.approx(reports["full"]["training"]["best_val_loss"], rel=1e-3)
