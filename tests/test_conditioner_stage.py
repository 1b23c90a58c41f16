"""The conditioner's latent weighting: latent numbers that move the field more cost more."""
from __future__ import annotations

import pytest
import torch

from modules.training.conditioner_stage import field_sensitivity
from modules.config.schema import ModelConfig
from modules.training.objectives import ConditionerObjective
from modules.models.vae import HierarchicalVAE


def test_sensitivity_is_the_finite_difference_of_the_decoded_field_and_sees_an_ignored_latent():
    torch.manual_seed(0)
    model = HierarchicalVAE(ModelConfig(encoder_filters=(12, 6), latent_dim_main=3, latent_dim_hier=2,
                                        decoder_width=16, decoder_depth=2), 10, 6, 4)
    with torch.no_grad():
        model.decoder.start[0].weight[:, 1] = 0.0  # main latent 1 never reaches the field
        model.decoder.start[0].weight[:, 2] *= 5.0  # main latent 2 moves it most
    latents = torch.randn(40, model.flat_latent_dim) * torch.linspace(0.5, 2.0, model.flat_latent_dim)
    weights = field_sensitivity(model, latents)
    mean, spread = latents.mean(dim=0), latents.std(dim=0)
    with torch.no_grad():
        base = model.decode_flat(mean[None], projected=True)
        by_hand = torch.stack([(model.decode_flat((mean + spread[j] * torch.eye(len(mean))[j])[None], projected=True)
                                - base).pow(2).sum() / spread[j] ** 2 for j in range(len(mean))])
    expected = (by_hand / by_hand.mean()).clamp_min(1e-3)
    assert torch.allclose(weights, expected, rtol=1e-4)
    assert weights[1] == pytest.approx(1e-3)  # the floor: an ignored latent still costs a little
    assert weights[2] == weights.max()
    assert weights.mean() == pytest.approx(1.0, rel=0.01)


def test_weighted_latent_loss_by_hand():
    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            from modules.models.latent_layout import LatentPrediction
            return LatentPrediction(main=inputs[:, :1], hier=inputs[:, 1:].reshape(len(inputs), 1, 1))

    objective = ConditionerObjective(torch.tensor([1.5, 0.5]))
    loss, metrics = objective(Fixed(), (torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 3.0]])), 0)
    assert loss.item() == (1.5 * 1.0 + 0.5 * 4.0) / 2 == metrics["loss"]
