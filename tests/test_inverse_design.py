"""Reconstruction by inverse design: the design whose prediction matches the field, found through the prediction path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.ensemble import MembersCode
from modules.models.vae import HierarchicalVAE
from modules.runtime.devices import evaluation_mode
from modules.surrogate.inverse_design import (DesignPath, design_reconstruction, inverse_designs,
                                              outside_training_range)
from modules.training.reconstruction_choice import design_reconstruction_error

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


class TinyConditioner(nn.Module):
    """3 design numbers -> the VAE's 6 latent numbers, as a conditioner returns them."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 6))

    def forward(self, designs: torch.Tensor) -> MembersCode:
        return MembersCode(self.net(designs))


def design_path(on_design_prior: bool = False) -> DesignPath:
    torch.manual_seed(0)
    vae = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=4, latent_dim_hier=2, decoder_width=32,
                                      decoder_depth=2), 12, 6, 4, design_features=3 if on_design_prior else 0)
    return DesignPath(TinyConditioner(), vae, on_design_prior).eval()


def test_the_path_is_the_prediction_the_decoder_gives_for_the_conditioners_code():
    path = design_path()
    designs = torch.randn(5, 3)
    with torch.no_grad():
        expected = path.decoder.decode_flat(path.predictor(designs).flat(), projected=True)
        assert torch.equal(path(designs), expected)
        timesteps = torch.tensor([[0, 3]] * 5)
        assert torch.equal(path(designs, timesteps=timesteps), expected[:, :, [0, 3]])


def test_the_path_adds_the_design_prior_code_when_the_conditioner_corrects_it():
    path = design_path(on_design_prior=True)
    designs = torch.randn(4, 3)
    with torch.no_grad():
        flat = path.predictor(designs).flat() + path.decoder.design_latent(designs)
        assert torch.allclose(path(designs), path.decoder.decode_flat(flat, projected=True))
        assert not torch.allclose(path(designs), path.decoder.decode_flat(path.predictor(designs).flat(),
                                                                          projected=True))


def test_inverse_design_finds_a_design_that_predicts_the_field_far_better_than_the_nearest_candidate():
    path = design_path()
    torch.manual_seed(1)
    true_designs, candidates = torch.randn(4, 3), torch.randn(30, 3)
    with torch.no_grad():
        fields = path(true_designs)
    with evaluation_mode(path):
        found = inverse_designs(path, fields, candidates, steps=100)
        nearest = inverse_designs(path, fields, candidates, steps=0)
        # zero steps: each field's nearest candidate by prediction, which is one of the candidates
        assert all(any(torch.equal(row, candidate) for candidate in candidates) for row in nearest)
        errors = (path(found) - fields).pow(2).sum(dim=(1, 2))
        before = (path(nearest) - fields).pow(2).sum(dim=(1, 2))
        assert torch.all(errors < 0.01 * before)
        assert torch.equal(design_reconstruction(path, fields, candidates, steps=100), path(found))
    assert not any(parameter.grad is not None for parameter in path.parameters())  # the networks stay untouched


def test_the_validation_error_is_the_pooled_relative_error_of_the_inverse_design_prediction():
    path = design_path()
    torch.manual_seed(2)
    fields = torch.randn(5, 4, 6)  # no design predicts these exactly: the error is far from 0
    candidates = torch.randn(20, 3)
    with evaluation_mode(path):
        decoded = design_reconstruction(path, fields, candidates, steps=20)
    expected = float((decoded - fields).pow(2).sum().sqrt() / fields.pow(2).sum().sqrt())
    assert 0.1 < expected < 1.5
    assert design_reconstruction_error(path, fields, candidates, 20, CPU, batch_size=2) == pytest.approx(expected,
                                                                                                         rel=1e-5)


def test_found_designs_outside_the_training_range_beyond_the_margin_are_flagged():
    training = np.array([[0.0, 10.0], [1.0, 20.0], [0.5, 15.0]])  # spans 1 and 10: margins 0.05 and 0.5
    found = np.array([[0.5, 15.0], [1.04, 20.4], [-0.06, 15.0], [0.5, 20.6], [0.5, 9.4]])
    np.testing.assert_array_equal(outside_training_range(found, training), [False, False, True, True, True])
