"""The conditioner's latent weighting: latent numbers that move the field more cost more."""
from __future__ import annotations

import torch

from modules.training.conditioner_stage import field_sensitivity
from modules.config.schema import ModelConfig
from modules.models.linear_path import fit_linear_path
from modules.training.objectives import ConditionerObjective
from modules.models.vae import HierarchicalVAE


def test_sensitivity_of_a_pca_started_decoder_follows_the_component_variances():
    torch.manual_seed(0)
    nodes, timesteps = 10, 6
    x = torch.einsum("kr,rnt->knt", torch.randn(30, 8) * torch.linspace(3, 0.3, 8), torch.randn(8, nodes, timesteps))
    model = HierarchicalVAE(ModelConfig(encoder_filters=(12, 6), latent_dim_main=3, latent_dim_hier=2), nodes, timesteps)
    init = fit_linear_path(x * 0.05, 12, model.flat_latent_dim)
    model.initialise_linear_path(init)
    latents = model.encode(x * 0.05).flat().detach()
    weights = field_sensitivity(model, latents, None)
    # decode is linear at the start: moving latent j by its spread moves the field by that component's spread
    expected = init.coefficient_scale ** 2
    expected = (expected / expected.mean()).float()
    assert torch.allclose(weights, expected.clamp_min(1e-3), rtol=1e-3)
    assert weights[0] > weights[-1]


def test_weighted_latent_loss_by_hand():
    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            from modules.models.latent_layout import LatentPrediction
            return LatentPrediction(main=inputs[:, :1], hier=inputs[:, 1:].reshape(len(inputs), 1, 1))

    objective = ConditionerObjective(torch.tensor([1.5, 0.5]))
    loss, metrics = objective(Fixed(), (torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 3.0]])), 0)
    assert loss.item() == (1.5 * 1.0 + 0.5 * 4.0) / 2 == metrics["loss"]
