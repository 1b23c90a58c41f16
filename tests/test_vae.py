import math

import pytest
import torch

from modules.config.schema import ModelConfig, TrainConfig
from modules.models.decoder import time_features
from modules.models.distributions import LOGVAR_MIN
from modules.models.latent_layout import LatentLayout
from modules.models.layers import group_count
from modules.models.spatial_basis import fit_spatial_modes
from modules.models.vae import HierarchicalVAE, LatentCode
from modules.training.losses import vae_loss

NODES, TIMESTEPS, MODES, DESIGNS = 20, 10, 6, 3
SMALL = ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, decoder_width=32,
                    decoder_depth=2)


pytestmark = pytest.mark.usefixtures("single_thread")


def smooth_fields(num_cases: int = 8) -> torch.Tensor:
    """[cases, nodes, timesteps] travelling sine waves in [-0.6, 0.6], one phase per case."""
    node = torch.linspace(0, 1, NODES)[None, :, None]
    time = torch.linspace(0, 1, TIMESTEPS)[None, None, :]
    phase = torch.linspace(0, 1, num_cases)[:, None, None]
    return 0.6 * torch.sin(2 * math.pi * (node + phase)) * torch.cos(math.pi * time * (1 + phase))


def build(cfg: ModelConfig = SMALL, seed: int = 0, design_features: int = 0) -> HierarchicalVAE:
    """A VAE whose basis holds the leading MODES spatial modes of smooth_fields(8)."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(cfg, NODES, TIMESTEPS, MODES, design_features)
    modes = fit_spatial_modes(smooth_fields(8), MODES)
    model.basis.set_modes(modes.modes.float(), None, 1.0)
    return model


def test_group_count_divides_and_keeps_two_channels_per_group():
    assert group_count(1024) == 32
    assert group_count(20) == 4
    assert group_count(6) == 2
    assert group_count(3) == 1


@pytest.mark.parametrize("cfg", [
    SMALL,
    ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, decoder_width=32, large=True),
    ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, decoder_width=32, large=True,
                spectral_norm=True, grad_checkpoint=True),
], ids=["small", "large", "large-spectral-checkpoint"])
def test_forward_shapes_and_every_parameter_gets_a_gradient(cfg):
    model = build(cfg, design_features=DESIGNS)
    x = smooth_fields(3)
    out = model(x, design=torch.randn(3, DESIGNS))
    assert out.recon.shape == out.design_recon.shape == (3, NODES, TIMESTEPS)
    assert out.main_mu.shape == out.main_logvar.shape == out.z_main.shape == out.design_main_mu.shape == (3, 6)
    assert model.num_hier_levels == 2
    assert [tuple(t.shape) for t in out.hier_mu + out.hier_logvar + out.z_hier] == [(3, 3)] * 6
    assert [tuple(k.shape) for k in out.kl_per_level] == [(3,)] * 3
    loss = vae_loss(out, x, 1e-3, TrainConfig()).total + out.design_recon.square().mean()
    loss.backward()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in model.parameters() if p.requires_grad), trainable
    assert all(not name.startswith("basis") for name in trainable)  # the basis lives in buffers


def test_large_has_more_parameters_than_small():
    large = ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, decoder_width=32, large=True)
    assert build(large).parameter_count() > build(SMALL).parameter_count()


def test_projected_pass_is_the_full_field_pass_in_mode_coefficients():
    model = build().eval()
    x = smooth_fields(4)
    coefficients = model.basis.project(x)
    with torch.no_grad():
        full = model(x, use_mean=True)
        projected = model(coefficients, use_mean=True, projected=True)
    assert projected.recon.shape == (4, MODES, TIMESTEPS)
    assert torch.allclose(model.basis.readout(projected.recon), full.recon, atol=1e-6)
    assert torch.equal(projected.main_mu, full.main_mu)


def test_decoding_chosen_timesteps_gives_those_columns_of_the_full_transient():
    model = build().eval()
    x = smooth_fields(3)
    timesteps = torch.tensor([[0, 9, 4], [2, 3, 1], [5, 5, 8]])
    with torch.no_grad():
        whole = model(x, use_mean=True).recon
        some = model(x, use_mean=True, timesteps=timesteps).recon
    assert some.shape == (3, NODES, 3)
    assert torch.allclose(some, whole.gather(2, timesteps[:, None, :].expand(-1, NODES, -1)), atol=1e-6)


def test_time_features_distinguish_every_timestep_and_stay_bounded():
    features = time_features(40)
    assert features.shape == (40, 40)  # 20 frequencies, sin and cos
    assert features.abs().max() <= 1.0
    distances = torch.cdist(features, features) + torch.eye(40) * 10
    assert distances.min() > 0.1
    assert time_features(80).shape == (80, 64)  # capped at 32 frequencies
    assert time_features(1).shape == (1, 2)


def test_encode_decode_shapes_and_flat_round_trip():
    model = build().eval()
    x = smooth_fields(4)
    code = model.encode(x)
    assert isinstance(code, LatentCode)
    flat = code.flat()
    assert flat.shape == (4, model.flat_latent_dim) == (4, 6 + 2 * 3)
    assert code.flat_logvar().shape == flat.shape
    z_main, z_hier = LatentLayout(main=6, hier=3, levels=2).split(flat)
    assert torch.equal(z_main, code.main_mu)
    assert all(torch.equal(a, b) for a, b in zip(z_hier, code.hier_mu))
    assert model.decode(code.main_mu, code.hier_mu).shape == (4, NODES, TIMESTEPS)
    assert model.decode(code.main_mu).shape == (4, NODES, TIMESTEPS)


def test_encode_is_deterministic():
    model = build().eval()
    x = smooth_fields(4)
    first, second = model.encode(x), model.encode(x)
    assert torch.equal(first.flat(), second.flat())
    assert torch.equal(first.flat_logvar(), second.flat_logvar())


def test_decode_of_encode_equals_forward_with_means():
    model = build().eval()
    x = smooth_fields(4)
    with torch.no_grad():
        out = model(x, use_mean=True)
        code = model.encode(x)
        assert torch.allclose(model.decode(code.main_mu, code.hier_mu), out.recon, atol=1e-6)
        assert torch.allclose(model.decode_flat(code.flat()), out.recon, atol=1e-6)
    assert torch.equal(code.main_mu, out.main_mu)
    assert all(torch.allclose(a, b) for a, b in zip(code.hier_mu, out.hier_mu))


def test_kl_starts_at_zero_for_hier_levels_and_is_positive_for_main():
    # Priors start at N(0, I) and the posterior corrections at zero, so q = p at every level before training.
    model = build()
    out = model(smooth_fields(3))
    assert torch.all(out.kl_per_level[0] > 0)
    for level in out.kl_per_level[1:]:
        assert torch.allclose(level, torch.zeros(3), atol=1e-6)
    with torch.no_grad():
        prior_mean_decode = model.decode(out.main_mu)
        posterior_mean_decode = model(smooth_fields(3), use_mean=True).recon
    assert torch.allclose(prior_mean_decode, posterior_mean_decode, atol=1e-6)


def test_design_prior_sets_the_main_kl_and_predicts_from_the_design_alone():
    model = build(design_features=DESIGNS).eval()
    x, design = smooth_fields(3), torch.randn(3, DESIGNS)
    with torch.no_grad():
        out = model(x, use_mean=True, design=design)
        prior_mu = model.design_prior(design)
        expected_kl = 0.5 * ((out.main_mu - prior_mu).pow(2) + out.main_logvar.exp() - 1 - out.main_logvar).sum(1)
        assert torch.allclose(out.kl_per_level[0], expected_kl, rtol=1e-5)
        assert torch.equal(out.design_main_mu, prior_mu)
        assert torch.allclose(model.decode_flat(model.design_latent(design)), out.design_recon, atol=1e-6)
        assert torch.allclose(model.decode(prior_mu), out.design_recon, atol=1e-6)


def test_designs_are_refused_without_a_design_prior_and_checked_for_shape():
    with pytest.raises(ValueError, match="without a design prior"):
        build()(smooth_fields(2), design=torch.zeros(2, DESIGNS))
    with pytest.raises(ValueError, match=r"expected \[2, 3\]"):
        build(design_features=DESIGNS)(smooth_fields(2), design=torch.zeros(2, 4))


def test_bf16_autocast_keeps_kl_in_fp32():
    model = build()
    x = smooth_fields(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        terms = vae_loss(out, x, 1e-3, TrainConfig())
    assert out.recon.shape == (2, NODES, TIMESTEPS)
    assert all(level.dtype == torch.float32 for level in out.kl_per_level)
    assert torch.isfinite(terms.total)
    terms.total.backward()


def test_model_without_hierarchical_levels():
    cfg = ModelConfig(encoder_filters=(8,), latent_dim_main=4, latent_dim_hier=2, decoder_width=16)
    model = build(cfg)
    out = model(smooth_fields(2))
    assert model.num_hier_levels == 0 and out.hier_mu == [] and len(out.kl_per_level) == 1
    assert model.encode(smooth_fields(2)).flat().shape == (2, 4)
    assert model.decode(torch.zeros(2, 4)).shape == (2, NODES, TIMESTEPS)


def test_wrong_shapes_are_rejected_with_the_expected_shape():
    model = build()
    with pytest.raises(ValueError, match=r"expected \[batch, 20 nodes, 10 timesteps\]"):
        model(torch.zeros(2, 10, 20))
    with pytest.raises(ValueError, match=r"expected \[batch, 6 modes, 10 timesteps\]"):
        model(torch.zeros(2, NODES, TIMESTEPS), projected=True)
    with pytest.raises(ValueError, match=r"expected a flat latent of shape \[B, 12\]"):
        model.decode_flat(torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"expected 2 tensors of shape \[2, 3\]"):
        model.decode(torch.zeros(2, 6), [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="num_modes"):
        HierarchicalVAE(SMALL, NODES, TIMESTEPS, 0)


def test_logvar_is_clamped():
    model = build()
    with torch.no_grad():
        model.encoder.main_head.bias[6:] = -1000.0
    out = model(smooth_fields(2))
    assert out.main_logvar.min() >= LOGVAR_MIN
    assert torch.isfinite(out.kl_per_level[0]).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = build(SMALL)
    checkpointed = build(ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, decoder_width=32,
                                     decoder_depth=2, grad_checkpoint=True), seed=1)
    checkpointed.load_state_dict(plain.state_dict())
    x = smooth_fields(4)
    for model in (plain, checkpointed):
        out = model(x, generator=torch.Generator().manual_seed(0))
        vae_loss(out, x, 0.1, TrainConfig()).total.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name


def test_short_training_run_reduces_the_loss_well_below_the_zero_prediction():
    x = smooth_fields(8)
    model = build(ModelConfig(encoder_filters=(32, 16, 8), latent_dim_main=4, latent_dim_hier=2, decoder_width=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    cfg = TrainConfig()
    losses = []
    for _ in range(80):
        terms = vae_loss(model(x, generator=generator), x, 1e-4, cfg)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.recon.item())
    zero_prediction = x.square().mean().item()
    assert losses[-1] < 0.1 * zero_prediction
    with torch.no_grad():
        model.eval()
        assert torch.nn.functional.mse_loss(model(x, use_mean=True).recon, x) < 0.1 * zero_prediction
