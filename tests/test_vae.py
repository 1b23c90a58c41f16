import math

import pytest
import torch

from modules.config.schema import ModelConfig, TrainConfig
from modules.models.distributions import LOGVAR_MIN
from modules.models.layers import group_count
from modules.training.losses import vae_loss
from modules.models.latent_layout import LatentLayout
from modules.models.vae import HierarchicalVAE, LatentCode

NODES, TIMESTEPS = 20, 10
SMALL = ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, linear_path=False)


pytestmark = pytest.mark.usefixtures("single_thread")


def build(cfg: ModelConfig = SMALL, seed: int = 0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    return HierarchicalVAE(cfg, NODES, TIMESTEPS)


def smooth_fields(num_cases: int = 8) -> torch.Tensor:
    """[cases, nodes, timesteps] travelling sine waves in [-0.6, 0.6], one phase per case."""
    node = torch.linspace(0, 1, NODES)[None, :, None]
    time = torch.linspace(0, 1, TIMESTEPS)[None, None, :]
    phase = torch.linspace(0, 1, num_cases)[:, None, None]
    return 0.6 * torch.sin(2 * math.pi * (node + phase)) * torch.cos(math.pi * time * (1 + phase))


def test_group_count_divides_and_keeps_two_channels_per_group():
    assert group_count(1024) == 32
    assert group_count(20) == 4
    assert group_count(6) == 2
    assert group_count(3) == 1


@pytest.mark.parametrize("cfg", [
    SMALL,
    ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, linear_path=False, large=True),
    ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, linear_path=False, large=True,
                spectral_norm=True, grad_checkpoint=True),
], ids=["small", "large", "large-spectral-checkpoint"])
def test_forward_shapes(cfg):
    model = build(cfg)
    x = smooth_fields(3)
    out = model(x)
    assert out.recon.shape == (3, NODES, TIMESTEPS)
    assert out.main_mu.shape == out.main_logvar.shape == out.z_main.shape == (3, 6)
    assert model.num_hier_levels == 2
    assert [tuple(t.shape) for t in out.hier_mu + out.hier_logvar + out.z_hier] == [(3, 3)] * 6
    assert [tuple(k.shape) for k in out.kl_per_level] == [(3,)] * 3
    assert out.recon.abs().max() < 1.0  # tanh output
    vae_loss(out, x, 1e-3, TrainConfig()).total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_large_has_more_parameters_than_small():
    large = ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, linear_path=False, large=True)
    assert build(large).parameter_count() > build(SMALL).parameter_count()


def test_block_widths_follow_filters():
    model = build()
    assert model.encoder.input_projection.weight.shape == (16, NODES, 1)
    assert [level[1].branch[2].weight.shape[0] for level in model.encoder.levels] == [16, 8, 4]
    assert [block.branch[2].weight.shape[0] for block in model.decoder.level_blocks] == [8, 16]
    assert model.encoder.main_head.weight.shape == (2 * 6, 4 * TIMESTEPS)


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


def test_decode_without_hier_uses_the_prior_mean():
    model = build().eval()
    z_main = torch.randn(2, 6)
    with torch.no_grad():
        assert torch.equal(model.decode(z_main), model.decode(z_main))


def test_kl_starts_at_zero_for_hier_levels_and_is_positive_for_main():
    # The posterior correction is zero-initialised, so q = p at every level before training.
    out = build()(smooth_fields(3))
    assert torch.all(out.kl_per_level[0] > 0)
    for level in out.kl_per_level[1:]:
        assert torch.allclose(level, torch.zeros(3), atol=1e-6)


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
    cfg = ModelConfig(encoder_filters=(8,), latent_dim_main=4, latent_dim_hier=2)
    model = build(cfg)
    out = model(smooth_fields(2))
    assert model.num_hier_levels == 0 and out.hier_mu == [] and len(out.kl_per_level) == 1
    assert model.encode(smooth_fields(2)).flat().shape == (2, 4)
    assert model.decode(torch.zeros(2, 4)).shape == (2, NODES, TIMESTEPS)


def test_wrong_shapes_are_rejected_with_the_expected_shape():
    model = build()
    with pytest.raises(ValueError, match=r"expected \[batch, 20 nodes, 10 timesteps\]"):
        model(torch.zeros(2, 10, 20))
    with pytest.raises(ValueError, match=r"expected a flat latent of shape \[B, 12\]"):
        model.decode_flat(torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"expected 2 tensors of shape \[2, 3\]"):
        model.decode(torch.zeros(2, 6), [torch.zeros(2, 3)])


def test_logvar_is_clamped():
    model = build()
    with torch.no_grad():
        model.encoder.main_head.bias[6:] = -1000.0
    out = model(smooth_fields(2))
    assert out.main_logvar.min() >= LOGVAR_MIN
    assert torch.isfinite(out.kl_per_level[0]).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = build(SMALL)
    checkpointed = build(ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=6, latent_dim_hier=3, linear_path=False,
                                     grad_checkpoint=True), seed=1)
    checkpointed.load_state_dict(plain.state_dict())
    x = smooth_fields(4)
    for model in (plain, checkpointed):
        out = model(x, generator=torch.Generator().manual_seed(0))
        vae_loss(out, x, 0.1, TrainConfig()).total.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name


def test_short_training_run_reduces_the_loss():
    x = smooth_fields(8)
    model = build(ModelConfig(encoder_filters=(32, 16, 8), latent_dim_main=4, latent_dim_hier=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    cfg = TrainConfig()
    losses = []
    for _ in range(60):
        terms = vae_loss(model(x, generator=generator), x, 1e-3, cfg)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(terms.recon.item())
    assert losses[-1] < 0.25 * losses[0]
    with torch.no_grad():
        model.eval()
        assert torch.nn.functional.mse_loss(model(x, use_mean=True).recon, x) < 0.25 * losses[0]


def weighted_pca_reconstruction(x: torch.Tensor, components: int, weights: torch.Tensor) -> torch.Tensor:
    """Plain space-time PCA of x [k, N, T] in the metric of node weights, by hand."""
    flat = (x * weights[None, :, None]).reshape(len(x), -1).double()
    mean = flat.mean(dim=0)
    _, _, directions = torch.linalg.svd(flat - mean, full_matrices=False)
    basis = directions[:components].T
    projected = (flat - mean) @ basis @ basis.T + mean
    return (projected.reshape(x.shape) / weights[None, :, None]).float()


def test_linear_path_starts_exactly_at_the_pca_and_is_frozen():
    from modules.models.linear_path import fit_linear_path

    torch.manual_seed(3)
    x = torch.einsum("kr,rnt->knt", torch.randn(12, 9), torch.randn(9, NODES, TIMESTEPS)) * 0.05
    cfg = ModelConfig(encoder_filters=(24, 8, 4), latent_dim_main=4, latent_dim_hier=1)  # 24 >= NODES: exact
    model = build(cfg)
    weights = torch.rand(NODES) + 0.5
    model.initialise_linear_path(fit_linear_path(x, 24, model.flat_latent_dim, weights), weights)
    model.eval()
    expected = weighted_pca_reconstruction(x, model.flat_latent_dim, weights)
    with torch.no_grad():
        recon = model(x, use_mean=True).recon
        again = model.decode_flat(model.encode(x).flat())
    assert torch.allclose(recon, expected, atol=1e-5)
    assert torch.allclose(again, expected, atol=1e-5)
    frozen = {id(p) for p in model.linear_path_parameters()}
    assert frozen and all(not p.requires_grad for p in model.linear_path_parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)


def test_training_from_the_pca_start_lowers_the_loss():
    from modules.models.linear_path import fit_linear_path
    from modules.training.losses import reconstruction_loss

    x = smooth_fields(8)
    cfg = ModelConfig(encoder_filters=(8, 8, 4), latent_dim_main=2, latent_dim_hier=1)  # PCA-4 of 8 cases
    model = build(cfg)
    model.initialise_linear_path(fit_linear_path(x, 8, model.flat_latent_dim), None)
    model.eval()
    with torch.no_grad():
        start = reconstruction_loss(model(x, use_mean=True).recon, x, 1).item()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(150):
        optimizer.zero_grad()
        vae_loss(model(x), x, 1e-5, TrainConfig(recon_weight=100.0)).total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        end = reconstruction_loss(model(x, use_mean=True).recon, x, 1).item()
    assert end < 0.5 * start
