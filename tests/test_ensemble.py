"""The ensemble of prediction paths: the members' codes side by side, decoded each by its own decoder and
averaged; the kept members are the subset whose mean predicts the validation cases best."""
from __future__ import annotations

import pytest
import torch

from modules.config.schema import ModelConfig
from modules.models.ensemble import DecoderEnsemble
from modules.models.vae import HierarchicalVAE
from modules.training.conditioner_stage import best_subset

NODES, TIMESTEPS, MODES, PARAMS = 12, 8, 5, 3


def test_the_members_whose_mean_is_best_are_kept_and_fewer_win_ties():
    truth = torch.zeros(4, 3)
    high, low, far = truth + 1.0, truth - 1.0, truth + 5.0
    # two members wrong in opposite directions average to the truth; the far one is left out
    assert best_subset([high, far, low], truth) == ([0, 2], 0.0)
    assert best_subset([far, truth + 0.1, truth + 0.3], truth)[0] == [1]
    assert best_subset([truth, truth.clone()], truth)[0] == [0]  # a tie: the single member
    kept, error = best_subset([truth + 0.2, truth - 0.15, truth - 0.1], truth)
    assert kept == [0, 1, 2] and error == pytest.approx((0.05 / 3) ** 2)


def test_the_decoders_of_an_ensemble_average_their_own_decodes_of_their_own_codes():
    torch.manual_seed(0)
    vaes = [HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=3, latent_dim_hier=2, decoder_width=16),
                            NODES, TIMESTEPS, MODES, design_features=PARAMS).eval() for _ in range(2)]
    ensemble = DecoderEnsemble(vaes)
    flat = torch.randn(4, 2 * vaes[0].flat_latent_dim)
    first, second = flat.chunk(2, dim=1)
    with torch.no_grad():
        expected = (vaes[0].decode_flat(first, projected=True) + vaes[1].decode_flat(second, projected=True)) / 2
        torch.testing.assert_close(ensemble.decode_flat(flat, projected=True), expected)
        design = torch.randn(4, PARAMS)
        torch.testing.assert_close(ensemble.design_latent(design),
                                   torch.cat([vae.design_latent(design) for vae in vaes], dim=1))
    with pytest.raises(ValueError, match="side by side"):
        ensemble.decode_flat(flat[:, :-1], projected=True)
