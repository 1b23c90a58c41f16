"""The case PCA path (case_pca_path 1): the untrained VAE is exactly PCA of the training cases, and its linear maps
stay that PCA through training and end-to-end fine-tuning while the nonlinear parts learn what it misses."""
from __future__ import annotations

import math

import pytest
import torch

from modules.config.schema import ModelConfig
from modules.models.case_pca import CASE_PCA_AUTO_UNEXPLAINED, CasePCA, use_case_pca
from modules.models.conditioners import build_conditioner
from modules.config.schema import ConditionerConfig
from modules.models.vae import HierarchicalVAE
from modules.training.objectives import ConditionedDecoder

MODES, TIMESTEPS = 6, 10
CONFIG = ModelConfig(encoder_filters=(16, 8, 4), latent_dim_main=4, latent_dim_hier=2, decoder_width=32,
                     decoder_depth=2)  # 4 + 2 x 2 = 8 latent numbers


def coefficients(cases: int, seed: int = 0) -> torch.Tensor:
    """[cases, MODES, TIMESTEPS] of full rank: random mixtures of 12 smooth patterns plus an offset."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.linspace(0, 1, TIMESTEPS)
    patterns = torch.stack([torch.sin(math.pi * (k + 1) * time[None, :] + torch.arange(MODES)[:, None] * 0.3 * k)
                            for k in range(12)])  # [12, C, T]
    weights = torch.randn(cases, 12, generator=generator) / torch.arange(1, 13)
    return torch.einsum("nk,kct->nct", weights, patterns) + 0.5


def pca_reconstruction(train: torch.Tensor, fields: torch.Tensor, components: int) -> torch.Tensor:
    flat = train.double().flatten(1)
    mean = flat.mean(dim=0)
    _, _, right = torch.linalg.svd(flat - mean, full_matrices=False)
    kept = right[:components]
    return ((fields.double().flatten(1) - mean) @ kept.T @ kept + mean).view(fields.shape)


def vae_at_pca_start(train: torch.Tensor, seed: int = 0) -> HierarchicalVAE:
    torch.manual_seed(seed)
    vae = HierarchicalVAE(CONFIG, 20, TIMESTEPS, MODES)
    vae.add_case_pca(CasePCA.fit(train, vae.layout.flat_size))
    return vae.eval()


def test_the_untrained_vae_reconstructs_every_case_exactly_as_pca_of_the_training_cases():
    train, held_out = coefficients(40), coefficients(7, seed=1)
    vae = vae_at_pca_start(train)
    expected = pca_reconstruction(train, held_out, components=8)
    with torch.no_grad():
        through_forward = vae(held_out, use_mean=True, projected=True).recon
        code = vae.encode(held_out, projected=True).flat()
        through_code = vae.decode_flat(code, projected=True)
    assert torch.allclose(through_forward.double(), expected, atol=1e-5)
    assert torch.allclose(through_code.double(), expected, atol=1e-5)
    # The code is the whitened scores: unit mean square over the training cases, main latent first.
    with torch.no_grad():
        train_code = vae.encode(train, projected=True).flat()
    assert torch.allclose(train_code.pow(2).mean(dim=0), torch.ones(8), atol=1e-4)
    assert not torch.allclose(through_forward.double(), held_out.double(), atol=1e-3)  # 8 of 12 patterns: lossy


def test_fewer_training_cases_than_latent_numbers_keep_only_the_data_rank():
    train = coefficients(5)
    pca = CasePCA.fit(train, components=8)
    assert pca.count == 4  # 5 centred cases span 4 directions
    # The kept directions own their memory (a view of the SVD's rows is saved whole by torch.save).
    assert pca.directions.untyped_storage().nbytes() == pca.directions.numel() * pca.directions.element_size()
    vae = vae_at_pca_start(train)
    with torch.no_grad():
        code = vae.encode(train, projected=True).flat()
        recon = vae.decode_flat(code, projected=True)
    assert torch.allclose(code[:, 4:], torch.zeros(5, 4), atol=1e-6)  # the unused latent numbers start at 0
    assert torch.allclose(recon, train, atol=1e-4)  # the rank is kept whole: training cases come back exactly


def test_auto_turns_the_path_on_only_for_a_nearly_linear_sweep_and_1_and_0_decide_alone():
    train, held_out = coefficients(40), coefficients(10, seed=1)
    assert use_case_pca("auto", train, held_out, components=12)[0] is not None  # 12 patterns: PCA misses nothing
    pca, reason = use_case_pca("auto", train, held_out, components=3)
    share = CasePCA.fit(train, 3).unexplained(held_out)
    assert pca is None and share > CASE_PCA_AUTO_UNEXPLAINED and f"{share:.1%}" in reason
    assert use_case_pca("1", train, held_out, components=3)[0].count == 3
    assert use_case_pca("0", train, held_out, components=12)[0] is None
    assert use_case_pca("auto", train, held_out[:0], components=12)[0] is None  # nothing to decide on


def test_a_vae_saved_with_the_path_is_rebuilt_with_it(tmp_path):
    vae = vae_at_pca_start(coefficients(30))
    rebuilt = HierarchicalVAE(CONFIG, 20, TIMESTEPS, MODES, case_pca=True)
    rebuilt.load_state_dict(vae.state_dict())
    held_out = coefficients(4, seed=2)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(held_out, use_mean=True, projected=True).recon,
                           vae(held_out, use_mean=True, projected=True).recon)
    plain = HierarchicalVAE(CONFIG, 20, TIMESTEPS, MODES)
    assert not plain.case_pca and plain.decoder.case_readout is None
    with pytest.raises(RuntimeError, match="case_projection"):
        plain.load_state_dict(vae.state_dict())


def test_training_moves_the_nonlinear_parts_and_leaves_the_pca_maps_as_fitted():
    train = coefficients(30)
    vae = vae_at_pca_start(train).train()
    linear = [vae.case_projection.weight, vae.case_projection.bias, vae.decoder.case_readout.weight,
              vae.decoder.case_readout.bias]
    start = [parameter.detach().clone() for parameter in linear]
    trainable = [parameter for parameter in vae.parameters() if parameter.requires_grad]
    assert trainable and not any(parameter.requires_grad for parameter in linear)
    optimiser = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(5):
        optimiser.zero_grad()
        (vae(train, use_mean=True, projected=True).recon - train).square().mean().backward()
        optimiser.step()
    assert all(torch.equal(parameter, before) for parameter, before in zip(linear, start))
    assert not torch.equal(vae.decoder.readout[-1].weight, torch.zeros_like(vae.decoder.readout[-1].weight))
    # a VAE rebuilt for loading has the maps frozen too, so a resumed run does not start training them
    rebuilt = HierarchicalVAE(CONFIG, 20, TIMESTEPS, MODES, case_pca=True)
    assert not rebuilt.case_projection.weight.requires_grad and not rebuilt.decoder.case_readout.weight.requires_grad


def test_a_fresh_prediction_decoder_keeps_the_pca_readout_frozen():
    train = coefficients(30)
    vae = vae_at_pca_start(train)
    start = vae.decoder.case_readout.weight.detach().clone()
    readout_before = vae.decoder.readout[0].weight.detach().clone()
    conditioner = build_conditioner(ConditionerConfig(num_params=3, filters=(16,)), 4, 2, vae.num_hier_levels)
    model = ConditionedDecoder(conditioner, vae, finetune_decoder=True, fresh_decoder=True)
    assert torch.equal(vae.decoder.case_readout.weight, start)  # not reinitialised ...
    assert not torch.equal(vae.decoder.readout[0].weight, readout_before)  # ... while the MLP readout is
    assert not vae.decoder.case_readout.weight.requires_grad and not vae.case_projection.weight.requires_grad
    flat, recon = model(torch.randn(5, 3))
    recon.square().mean().backward()
    assert vae.decoder.case_readout.weight.grad is None and vae.decoder.readout[0].weight.grad.abs().sum() > 0


def test_prediction_decoders_of_unit_fields_start_their_linear_path_at_the_unit_fields_pca():
    from modules.models.ensemble import decoder_copy
    from modules.training.conditioner_stage import start_linear_paths_at_pca
    train, held_out = coefficients(40), coefficients(7, seed=1)
    vae = vae_at_pca_start(train)
    unit = train / torch.linspace(0.3, 2.0, 40)[:, None, None]  # the training fields over each design's r
    copies = [decoder_copy(vae) for _ in range(2)]
    assert start_linear_paths_at_pca(copies, unit) == 8
    expected = pca_reconstruction(unit, held_out, components=8)
    for copy in copies:
        with torch.no_grad():
            decoded = copy.decoder.linear_readout(copy.case_projection(held_out.flatten(1)))
        assert torch.allclose(decoded.double(), expected, atol=1e-4)
        assert not copy.decoder.case_readout.weight.requires_grad  # still frozen
    with torch.no_grad():  # the VAE itself keeps the fields' PCA (it reconstructs)
        kept = vae.decoder.linear_readout(vae.case_projection(held_out.flatten(1)))
    assert torch.allclose(kept.double(), pca_reconstruction(train, held_out, components=8), atol=1e-4)
