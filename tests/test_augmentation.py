"""Augmentations: shapes, probabilities, identity when off, hand-computed warps, and never in validation."""
from __future__ import annotations

import pytest
import torch

from modules.training.augmentation import (DesignAugmenter, FieldAugmenter, ImageAugmenter, ParameterPerturber,
                                          gaussian_blur, mask_node_groups, time_warp)
from modules.config.schema import AugmentationConfig, EndToEndConfig, TrainConfig
from modules.training.objectives import ConditionerObjective, EndToEndObjective, VAEObjective
from modules.models.vae import VAEOutput


def fields(batch: int = 6, nodes: int = 10, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, nodes, steps) - 0.5


def test_time_warp_by_hand():
    x = torch.tensor([[[0.0, 1.0, 2.0, 3.0, 4.0]]])
    assert torch.allclose(time_warp(x, torch.tensor([1.0])), x)
    # factor 0.5: step t reads position t/2 -> 0, 0.5, 1, 1.5, 2
    assert torch.allclose(time_warp(x, torch.tensor([0.5])), torch.tensor([[[0.0, 0.5, 1.0, 1.5, 2.0]]]))
    # factor 1.5 reads 0, 1.5, 3, 4.5 -> clamped to the last step 4
    assert torch.allclose(time_warp(x, torch.tensor([1.5])), torch.tensor([[[0.0, 1.5, 3.0, 4.0, 4.0]]]))


def test_node_mask_zeroes_one_block_per_case():
    x = torch.ones(4, 20, 3)
    masked = mask_node_groups(x, 0.25, torch.Generator().manual_seed(1))
    zeroed = (masked == 0).all(dim=2)  # [B, N]
    assert (zeroed.sum(dim=1) == 5).all()
    for row in zeroed:
        where = row.nonzero().flatten()
        assert (where.diff() == 1).all()  # consecutive nodes


def test_everything_off_is_the_identity():
    augmenter = FieldAugmenter(AugmentationConfig())
    x = fields()
    inputs, target = augmenter(x)
    assert not augmenter.active and torch.equal(inputs, x) and torch.equal(target, x)
    assert not ParameterPerturber(AugmentationConfig()).active


def test_noise_and_masking_corrupt_only_the_input_and_warping_changes_both():
    x = fields()
    torch.manual_seed(3)
    inputs, target = FieldAugmenter(AugmentationConfig(noise_probability=1.0))(x)
    assert torch.equal(target, x) and not torch.equal(inputs, x)
    noise_std = (inputs - x).std().item()
    assert 0.004 < noise_std < 0.03
    inputs, target = FieldAugmenter(AugmentationConfig(time_warp_probability=1.0, time_warp_range=0.3))(x)
    assert torch.equal(inputs, target) and not torch.equal(target, x) and target.shape == x.shape


@pytest.mark.parametrize("probability", [0.25, 0.75])
def test_each_case_is_picked_with_its_probability(probability):
    torch.manual_seed(4)
    x = torch.zeros(2000, 3, 2)
    inputs, _ = FieldAugmenter(AugmentationConfig(noise_probability=probability))(x)
    share = (inputs.abs().sum(dim=(1, 2)) > 0).float().mean().item()
    assert abs(share - probability) < 0.04


def test_parameter_perturbation():
    torch.manual_seed(5)
    params = torch.zeros(4000, 5)
    jittered = ParameterPerturber(AugmentationConfig(param_noise_probability=1.0, param_noise_std=0.1))(params)
    assert jittered.std().item() == pytest.approx(0.1, rel=0.05)


class SpyVAE(torch.nn.Module):
    """Records what the objective feeds it; returns the input as its reconstruction."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, use_mean=False, design=None):
        self.seen.append(x.clone())
        zeros = torch.zeros(x.shape[0])
        return VAEOutput(recon=x, main_mu=None, main_logvar=None, hier_mu=[], hier_logvar=[], kl_per_level=[zeros],
                         z_main=None, z_hier=[])


def test_augmentation_never_runs_in_validation():
    config = AugmentationConfig(noise_probability=1.0, node_mask_probability=1.0, time_warp_probability=1.0)
    objective = VAEObjective(TrainConfig(), augmenter=FieldAugmenter(config))
    model, x = SpyVAE(), fields()
    model.eval()
    objective(model, (x,), 0)
    assert all(torch.equal(seen, x) for seen in model.seen)
    model.train()
    objective(model, (x,), 0)
    assert not torch.equal(model.seen[-1], x)
    lc = ConditionerObjective(perturber=DesignAugmenter(AugmentationConfig(param_noise_probability=1.0)))
    assert lc.perturber is not None


def test_blur_keeps_flat_images_and_their_mean_and_a_zero_width_changes_nothing():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 12, 12, generator=generator)
    images[2] = 0.4  # a flat image: the same after any blur (reflected edges add no dark border)
    blurred = gaussian_blur(images, torch.tensor([0.0, 0.6, 1.0]))
    torch.testing.assert_close(blurred[0], images[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(blurred[2], images[2], rtol=0, atol=1e-6)
    assert blurred[1].std() < images[1].std()  # smoothed
    assert abs(blurred[1].mean() - images[1].mean()) < 0.02


def test_image_augmentation_keeps_the_gray_levels_that_encode_a_design():
    """Noise and blur of a drawing whose brightness is a parameter: each region keeps its mean level."""
    images = torch.full((64, 1, 16, 16), 0.2)
    images[:, :, 4:12, 4:12] = 0.8  # a disk whose brightness stands for a parameter
    augmenter = ImageAugmenter(AugmentationConfig(image_noise_probability=1.0, image_noise_std=0.05,
                                                  image_blur_probability=1.0, image_blur_sigma=0.6))
    augmenter.generator = torch.Generator().manual_seed(1)
    out = augmenter(images)
    assert not torch.equal(out, images)
    assert abs(out[:, :, 6:10, 6:10].mean() - 0.8) < 0.01 and abs(out[:, :, 0:2, 0:2].mean() - 0.2) < 0.01
    assert abs((out - images).mean()) < 0.005  # no brightness shift


def test_design_augmenter_treats_parameters_and_images_each_with_their_own_settings():
    only_images = DesignAugmenter(AugmentationConfig(image_noise_probability=1.0))
    params = torch.randn(4, 5)
    assert only_images.active and torch.equal(only_images(params), params)
    assert not torch.equal(only_images(torch.zeros(2, 1, 8, 8)), torch.zeros(2, 1, 8, 8))
    assert not DesignAugmenter(AugmentationConfig()).active


class SpyConditionedDecoder(torch.nn.Module):
    """Records the design inputs the end-to-end objective feeds it; predicts zeros."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, inputs):
        self.seen.append(inputs.clone())
        return torch.zeros(inputs.shape[0], 2), torch.zeros(inputs.shape[0], 3, 4)


@pytest.mark.parametrize("shape, config", [
    ((5, 3), AugmentationConfig(param_noise_probability=1.0)),
    ((5, 1, 8, 8), AugmentationConfig(image_noise_probability=1.0, image_noise_std=0.1))])
def test_end_to_end_training_augments_the_designs_in_training_only(shape, config):
    """The shipped conditioner trains end to end: its parameter jitter and image noise must reach that path too."""
    objective = EndToEndObjective(EndToEndConfig(), DesignAugmenter(config))
    model, designs = SpyConditionedDecoder(), torch.randn(*shape)
    batch = (designs, torch.zeros(shape[0], 2), torch.zeros(shape[0], 3, 4))
    model.eval()
    objective(model, batch, 0)
    assert torch.equal(model.seen[-1], designs)
    model.train()
    objective(model, batch, 0)
    assert model.seen[-1].shape == designs.shape and not torch.equal(model.seen[-1], designs)
    untouched = EndToEndObjective(EndToEndConfig(), DesignAugmenter(AugmentationConfig()))
    untouched(model, batch, 0)
    assert torch.equal(model.seen[-1], designs)
