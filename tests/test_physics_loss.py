"""Physics terms against hand-computed values on a 4-node mesh of two triangles, adaptive weighting,
gradients, and a tiny run of the whole command with the physics terms on."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from modules.storage.state_files import load_state
from modules.config.schema import PhysicsLossConfig, TrainConfig
from modules.training.objectives import VAEObjective
from modules.training.physics_loss import PhysicsLoss, conservation_loss, spatial_loss, temporal_loss
from tiny_sweep import load_entry, tiny_condition, tiny_preset

# Two triangles (0, 1, 2) and (1, 2, 3) share the side 1-2: five edges.
EDGES = torch.tensor([[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
# recon - target per node (rows) and timestep (columns), batch of one.
ERROR = torch.tensor([[1.0, 2.0, 4.0],
                      [0.0, 0.0, 0.0],
                      [3.0, 3.0, 3.0],
                      [0.0, 1.0, 0.0]])[None]


def pair(offset: float = 0.0):
    """(recon, target): the target is an arbitrary field, the terms see only the error."""
    target = torch.full_like(ERROR, offset) + torch.arange(4.0)[None, :, None]
    return target + ERROR, target


def test_temporal_term_is_the_mean_squared_error_of_time_differences():
    # node 0: diffs 1, 2; node 3: 1, -1; nodes 1, 2: 0 -> (1 + 4 + 1 + 1) / (4 nodes x 2 differences)
    assert temporal_loss(*pair()).item() == pytest.approx(7 / 8)
    assert temporal_loss(*pair(offset=5.0)).item() == pytest.approx(7 / 8)


def test_spatial_term_is_the_mean_squared_error_of_differences_across_edges():
    # edge 0-1: 1,2,4 -> 21; 0-2: -2,-1,1 -> 6; 1-2: -3,-3,-3 -> 27; 1-3: 0,-1,0 -> 1; 2-3: 3,2,3 -> 22
    assert spatial_loss(*pair(), EDGES).item() == pytest.approx(77 / 15)


def test_conservation_term_is_the_mean_squared_error_of_the_nodal_mean():
    # node means per timestep: 4/4, 6/4, 7/4 -> (1 + 2.25 + 3.0625) / 3
    assert conservation_loss(*pair()).item() == pytest.approx(6.3125 / 3)


def test_with_two_variables_the_conservation_term_takes_each_variables_mean():
    # channels node-major (node 0 var 0, node 0 var 1, node 1 var 0, node 1 var 1): variable means per timestep
    # var 0 (rows 0, 2): 2, 2.5, 3.5; var 1 (rows 1, 3): 0, 0.5, 0 -> (4 + 6.25 + 12.25 + 0 + 0.25 + 0) / 6
    assert conservation_loss(*pair(), num_variables=2).item() == pytest.approx(22.75 / 6)


def test_node_weights_scale_the_error_by_their_square_root():
    # sqrt(weights) = 2, 1, 1, 0: node 0's error doubles and node 3's vanishes
    weights = torch.tensor([4.0, 1.0, 1.0, 0.0])
    recon, target = pair()
    assert temporal_loss(recon, target, weights).item() == pytest.approx((4 + 16) / 8)
    # edges: 0-1: 2,4,8 -> 84; 0-2: -1,1,5 -> 27; 1-2: 27; 1-3: 0; 2-3: 3,3,3 -> 27
    assert spatial_loss(recon, target, EDGES, weights).item() == pytest.approx(165 / 15)
    # node means: 5/4, 7/4, 11/4
    assert conservation_loss(recon, target, weights).item() == pytest.approx((1.5625 + 3.0625 + 7.5625) / 3)


def test_temporal_term_of_a_single_timestep_is_zero():
    assert temporal_loss(torch.ones(2, 4, 1), torch.zeros(2, 4, 1)).item() == 0.0


def test_physics_loss_weights_and_names_only_the_active_terms():
    loss = PhysicsLoss(PhysicsLossConfig(temporal_weight=0.1, spatial_weight=0.05, conservation_weight=0.02), EDGES)
    terms = loss(*pair())
    assert set(terms.terms) == {"temporal", "spatial", "conservation"}
    expected = 0.1 * 7 / 8 + 0.05 * 77 / 15 + 0.02 * 6.3125 / 3
    assert terms.total.item() == pytest.approx(expected)
    only_temporal = PhysicsLoss(PhysicsLossConfig(temporal_weight=0.5))(*pair())
    assert set(only_temporal.terms) == {"temporal"} and only_temporal.total.item() == pytest.approx(0.5 * 7 / 8)


def test_adaptive_weighting_makes_each_term_add_weight_times_recon():
    config = PhysicsLossConfig(temporal_weight=0.1, spatial_weight=0.05, conservation_weight=0.02,
                               adaptive_weighting=True)
    reference = torch.tensor(0.3)
    terms = PhysicsLoss(config, EDGES)(*pair(), reference=reference)
    for name, weight in (("temporal", 0.1), ("spatial", 0.05), ("conservation", 0.02)):
        assert (terms.weights[name] * terms.terms[name]).item() == pytest.approx(weight * 0.3)
    assert terms.weights["spatial"].item() == pytest.approx(0.05 * 0.3 / (77 / 15))
    assert terms.total.item() == pytest.approx(0.3 * (0.1 + 0.05 + 0.02))
    with pytest.raises(ValueError, match="adaptive weighting needs the batch's reconstruction loss"):
        PhysicsLoss(config, EDGES)(*pair())


def test_gradients_flow_into_the_reconstruction_and_not_through_the_adaptive_weight():
    recon, target = pair()
    recon.requires_grad_(True)
    conservation_loss(recon, target).backward()
    # d/dx of mean_t (mean_n e)^2 = 2 m_t / (N T) for every node: m = 1, 1.5, 1.75
    expected = torch.tensor([2 * 1.0, 2 * 1.5, 2 * 1.75]) / 12
    assert torch.allclose(recon.grad[0], expected.expand(4, 3))

    config = PhysicsLossConfig(conservation_weight=0.02, adaptive_weighting=True)
    recon.grad = None
    PhysicsLoss(config)(recon, target, reference=torch.tensor(0.3)).total.backward()
    scale = 0.02 * 0.3 / (6.3125 / 3)  # the detached effective weight
    assert torch.allclose(recon.grad[0], scale * expected.expand(4, 3))


def test_construction_errors():
    with pytest.raises(ValueError, match="spatial_weight > 0 needs the mesh edges"):
        PhysicsLoss(PhysicsLossConfig(spatial_weight=0.1))
    with pytest.raises(ValueError, match=r"edges must have shape \[E, 2\], got \[5\]"):
        PhysicsLoss(PhysicsLossConfig(spatial_weight=0.1), torch.arange(5))
    loss = PhysicsLoss(PhysicsLossConfig(spatial_weight=0.1), torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="an edge uses node 7, but the fields have 4 nodes"):
        loss(*pair())


class TinyVAE(torch.nn.Module):
    """recon = x * scale; enough of a VAE for the objective (recon and a KL per level)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, use_mean=False, design=None):
        return SimpleNamespace(recon=x * self.scale, kl_per_level=[torch.zeros(x.shape[0])], design_recon=None)


def test_vae_objective_adds_the_physics_terms_inside_alpha_and_logs_them():
    torch.manual_seed(0)
    fields = torch.randn(2, 4, 3)
    train = TrainConfig(recon_weight=10.0, loss_type=1)
    physics = PhysicsLoss(PhysicsLossConfig(temporal_weight=0.1, spatial_weight=0.05), EDGES)
    model = TinyVAE()
    plain_total, plain = VAEObjective(train)(model, (fields,), 0)
    total, metrics = VAEObjective(train, physics=physics)(model, (fields,), 0)
    recon, target = 0.5 * fields, fields
    expected_physics = 0.1 * temporal_loss(recon, target) + 0.05 * spatial_loss(recon, target, EDGES)
    assert total.item() == pytest.approx(plain_total.item() + 10.0 * expected_physics.item(), rel=1e-6)
    assert metrics["physics_temporal"] == pytest.approx(temporal_loss(recon, target).item())
    assert "physics_conservation" not in metrics and "physics_temporal" not in plain
    model.eval()
    _, val_plain = VAEObjective(train)(model, (fields,), 0)
    _, val_metrics = VAEObjective(train, physics=physics)(model, (fields,), 0)
    assert val_metrics["selection"] == val_plain["selection"]


def test_the_command_trains_with_physics_terms_and_logs_them(tmp_path: Path):
    torch.set_num_threads(1)
    entry = load_entry("simulgen_entry_physics")
    extra = ("physics_temporal_weight\t0.1\nphysics_spatial_weight\t0.05\nphysics_conservation_weight\t0.02\n"
             "physics_neighbours\t4\nadaptive_loss_weighting\t1\n")
    (tmp_path / "preset.txt").write_text(tiny_preset())
    (tmp_path / "condition.txt").write_text(tiny_condition(tmp_path / "data", epochs=2, lc_epochs=1, extra=extra))
    out = tmp_path / "out"
    assert entry.main(["--preset-file", str(tmp_path / "preset.txt"), "--condition", str(tmp_path / "condition.txt"),
                       "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    log = (out / "train_log.txt").read_text()
    assert "physics spatial term on" in log and "nearest neighbours" in log and "adaptive" in log
    assert "physics_temporal" in log and "physics_spatial" in log and "physics_conservation" in log
    history = load_state(out / "checkpoints" / "vae_last.pt")["history"]
    for name in ("train_physics_temporal", "train_physics_spatial", "val_physics_conservation"):
        assert len(history[name]) == 2 and all(value >= 0 for value in history[name])
    assert 0 <= json.loads((out / "report.json").read_text())["vae"]["relative_l2"]["vae"]["val"]["mean"] < 1
