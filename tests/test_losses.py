import math

import pytest
import torch

from modules.config.schema import TrainConfig
from modules.models.distributions import LOGVAR_MAX, LOGVAR_MIN, DiagonalNormal
from modules.training.losses import LossTerms, kl_weight, reconstruction_loss, vae_loss
from modules.models.vae import VAEOutput

RECON = torch.tensor([[0.0, 0.5, 3.0, -2.0]])
TARGET = torch.zeros(1, 4)


def test_kl_against_standard_normal_by_hand():
    # mu = 1, logvar = 0: 0.5 * (1 + 1 - 1 - 0) = 0.5 per dim, 4 dims.
    kl = DiagonalNormal(torch.ones(2, 4), torch.zeros(2, 4)).kl_standard()
    assert kl.shape == (2,)
    assert torch.allclose(kl, torch.full((2,), 2.0))
    assert torch.allclose(DiagonalNormal(torch.zeros(3, 5), torch.zeros(3, 5)).kl_standard(), torch.zeros(3))


def test_kl_between_two_normals_by_hand():
    # q = N(1, 4), p = N(0, 1): 0.5 * (4 + 1 - 1 - ln 4) = 2 - ln 2.
    kl = DiagonalNormal(torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]])).kl(
        DiagonalNormal(torch.zeros(1, 1), torch.zeros(1, 1)))
    assert kl.item() == pytest.approx(2.0 - math.log(2.0), rel=1e-6)
    # q = N(0, 1), p = N(2, 4): 0.5 * (1/4 + 4/4 - 1 + ln 4) = 0.125 + ln 2.
    kl = DiagonalNormal(torch.tensor([[0.0]]), torch.tensor([[0.0]])).kl(
        DiagonalNormal(torch.tensor([[2.0]]), torch.tensor([[math.log(4.0)]])))
    assert kl.item() == pytest.approx(0.125 + math.log(2.0), rel=1e-6)


def test_kl_of_a_distribution_with_itself_is_zero_and_matches_kl_standard():
    mu, logvar = torch.randn(3, 6), torch.randn(3, 6)
    q = DiagonalNormal(mu, logvar)
    assert torch.allclose(q.kl(q), torch.zeros(3), atol=1e-6)
    assert torch.allclose(q.kl(DiagonalNormal(torch.zeros_like(mu), torch.zeros_like(mu))), q.kl_standard(), atol=1e-6)


def test_normal_clamps_logvar_and_samples_reproducibly():
    q = DiagonalNormal(torch.zeros(2, 3), torch.tensor([[-100.0, 0.0, 100.0]] * 2))
    assert q.logvar[0].tolist() == [LOGVAR_MIN, 0.0, LOGVAR_MAX]
    a = q.rsample(torch.Generator().manual_seed(5))
    b = q.rsample(torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_rsample_has_the_requested_moments():
    q = DiagonalNormal(torch.full((20000, 1), 2.0), torch.full((20000, 1), math.log(0.25)))
    draws = q.rsample(torch.Generator().manual_seed(0))
    assert draws.mean().item() == pytest.approx(2.0, abs=0.02)
    assert draws.std().item() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("loss_type, expected", [
    (1, (0.0 + 0.25 + 9.0 + 4.0) / 4),              # MSE
    (2, (0.0 + 0.5 + 3.0 + 2.0) / 4),               # MAE
    (3, (0.0 + 0.125 + 2.5 + 1.5) / 4),             # SmoothL1, beta = 1: 0.5 d^2 below 1, |d| - 0.5 above
    (4, (0.0 + 0.125 + 2.5 + 1.5) / 4),             # Huber, delta = 1: the same as SmoothL1 at beta = 1
])
def test_reconstruction_loss_by_hand(loss_type, expected):
    assert reconstruction_loss(RECON, TARGET, loss_type).item() == pytest.approx(expected, rel=1e-6)


def test_smooth_l1_and_huber_differ_only_by_the_threshold_scaling():
    # Both are 0.5 d^2 for small d; for d = 3 they coincide at beta = delta = 1 (checked above),
    # and MSE / 2 equals both where every |d| < 1.
    small = torch.tensor([[0.2, -0.4, 0.9]])
    mse = reconstruction_loss(small, torch.zeros(1, 3), 1).item()
    for loss_type in (3, 4):
        assert reconstruction_loss(small, torch.zeros(1, 3), loss_type).item() == pytest.approx(mse / 2, rel=1e-6)


def test_unknown_loss_type_names_the_valid_types():
    with pytest.raises(ValueError) as error:
        reconstruction_loss(RECON, TARGET, 5)
    assert str(error.value) == "unknown loss_type 5; valid types are 1 (MSE), 2 (MAE), 3 (SmoothL1), 4 (Huber)"


def test_kl_weight_endpoints_and_midpoint():
    cfg = TrainConfig(epochs=10, init_beta_divisor=4, beta_target=1e-2, beta_warmup_epochs=4)
    assert kl_weight(0, cfg) == pytest.approx(1e-4)
    assert kl_weight(2, cfg) == pytest.approx((1e-4 + 1e-2) / 2)
    assert kl_weight(4, cfg) == pytest.approx(1e-2)
    assert kl_weight(9, cfg) == pytest.approx(1e-2)


def test_kl_weight_without_warmup_and_with_default_warmup():
    assert kl_weight(0, TrainConfig(init_beta_divisor=0, beta_target=0.5)) == 0.5
    cfg = TrainConfig(epochs=20, init_beta_divisor=5, beta_target=1e-3)  # warmup = epochs // 2 = 10
    assert kl_weight(5, cfg) == pytest.approx((1e-5 + 1e-3) / 2)
    assert kl_weight(10, cfg) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        kl_weight(-1, cfg)


def test_vae_loss_combines_terms_by_hand():
    output = VAEOutput(
        recon=RECON, main_mu=torch.zeros(1, 2), main_logvar=torch.zeros(1, 2), hier_mu=[], hier_logvar=[],
        kl_per_level=[torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5])],
        z_main=torch.zeros(1, 2), z_hier=[],
    )
    cfg = TrainConfig(loss_type=2, recon_weight=10.0)
    terms = vae_loss(output, TARGET, beta=0.1, cfg=cfg)
    assert isinstance(terms, LossTerms)
    assert terms.recon.item() == pytest.approx(5.5 / 4)
    assert terms.kl.item() == pytest.approx(2.0 + 0.5)
    assert [float(level) for level in terms.kl_per_level] == [2.0, 0.5]
    assert terms.total.item() == pytest.approx(10.0 * 5.5 / 4 + 0.1 * 2.5)


def test_node_weights_make_the_loss_a_physical_error():
    from modules.training.losses import physical_node_weights, reconstruction_loss

    recon = torch.zeros(1, 2, 3)
    target = torch.tensor([[[0.1, 0.1, 0.1], [0.5, 0.5, 0.5]]])
    half_range = torch.tensor([10.0, 1.0])  # node 0 spans 20 units, node 1 spans 2
    weights = physical_node_weights(half_range)
    assert torch.allclose(weights, torch.tensor([200 / 101, 2 / 101]))
    # squared physical errors: (0.1*10)^2 = 1 and (0.5*1)^2 = 0.25, normalised by mean(half_range^2) = 50.5
    expected = (1.0 + 0.25) / 2 / 50.5
    assert reconstruction_loss(recon, target, 1, weights).item() == pytest.approx(expected, rel=1e-6)
    assert reconstruction_loss(recon, target, 1).item() == pytest.approx((0.01 + 0.25) / 2)
