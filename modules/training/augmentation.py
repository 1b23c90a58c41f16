"""On-the-fly augmentation of training batches, vectorised over the batch (no Python loop over nodes).

Each transform picks its cases independently with its own probability. Temporal warping makes a new plausible
case, so the VAE reconstructs the warped field; Gaussian noise and node masking only corrupt the input, so
the VAE learns to return the clean field (denoising). Parameter perturbation jitters the conditioner's
(standardised) design inputs. Design images get only changes that keep the design they draw: a little
pixel noise and a slight blur. Not brightness, contrast or geometry: a drawing may encode a parameter in its
gray levels, sizes or positions (the development sweeps draw strength and damping as brightness), and
changing those would teach the conditioner that other designs give the same field. Nothing here runs in
validation: the objectives call it only in training mode.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from modules.config.schema import AugmentationConfig


def chosen(batch: int, probability: float, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """[batch] bool: which cases a transform applies to."""
    if probability <= 0:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, generator=generator).to(device) < probability


def time_warp(fields: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """fields [B, N, T], factors [B]: value at step t is read at t * factor (linear interpolation, clamped to
    the last step), i.e. the transient runs 1/factor times as long."""
    steps = fields.shape[-1]
    position = (torch.arange(steps, device=fields.device, dtype=fields.dtype)[None, :] * factors[:, None]).clamp(
        0, steps - 1)  # [B, T]
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=steps - 1)
    weight = (position - lower.to(fields.dtype))[:, None, :]
    index = lambda i: i[:, None, :].expand(-1, fields.shape[1], -1)  # noqa: E731 (gather index per node)
    return fields.gather(2, index(lower)) * (1 - weight) + fields.gather(2, index(upper)) * weight


def mask_node_groups(fields: torch.Tensor, fraction: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Zero (the middle of the scaled range) one block of consecutive nodes per case, `fraction` of the nodes."""
    batch, nodes, _ = fields.shape
    width = max(1, int(round(fraction * nodes)))
    starts = torch.randint(0, nodes - width + 1, (batch,), generator=generator).to(fields.device)
    node = torch.arange(nodes, device=fields.device)[None, :]
    inside = (node >= starts[:, None]) & (node < starts[:, None] + width)  # [B, N]
    return fields.masked_fill(inside[:, :, None], 0.0)


class FieldAugmenter:
    """augment(fields [B, N, T]) -> (input, target) for one training batch of the VAE."""

    def __init__(self, config: AugmentationConfig):
        self.config = config
        # The global random stream, which checkpoints save per rank: a resumed run draws the same augmentations.
        self.generator: Optional[torch.Generator] = None

    @property
    def active(self) -> bool:
        c = self.config
        return max(c.time_warp_probability, c.node_mask_probability, c.noise_probability) > 0

    def __call__(self, fields: torch.Tensor):
        c, g, batch, device = self.config, self.generator, fields.shape[0], fields.device
        target = fields
        warp = chosen(batch, c.time_warp_probability, g, device)
        if warp.any():
            factors = 1 + c.time_warp_range * (2 * torch.rand(batch, generator=g).to(device) - 1)
            target = torch.where(warp[:, None, None], time_warp(fields, factors.to(fields.dtype)), fields)
        inputs = target
        mask = chosen(batch, c.node_mask_probability, g, device)
        if mask.any():
            inputs = torch.where(mask[:, None, None], mask_node_groups(inputs, c.node_mask_fraction, g), inputs)
        noisy = chosen(batch, c.noise_probability, g, device)
        if noisy.any():
            low, high = c.noise_std_range
            std = (low + (high - low) * torch.rand(batch, generator=g)).to(device, fields.dtype)
            noise = torch.randn(fields.shape, generator=g).to(device, fields.dtype) * std[:, None, None]
            inputs = inputs + noise * noisy[:, None, None]
        return inputs, target


class ParameterPerturber:
    """Gaussian jitter of standardised design parameters [B, p] for the chosen cases."""

    def __init__(self, config: AugmentationConfig):
        self.config = config
        self.generator: Optional[torch.Generator] = None  # the global stream, as FieldAugmenter

    @property
    def active(self) -> bool:
        return self.config.param_noise_probability > 0

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        picked = chosen(inputs.shape[0], self.config.param_noise_probability, self.generator, inputs.device)
        noise = torch.randn(inputs.shape, generator=self.generator).to(inputs.device, inputs.dtype)
        return inputs + self.config.param_noise_std * noise * picked[:, None].to(inputs.dtype)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W] each blurred by a Gaussian of its own width sigmas [B] (pixels; 0 leaves it as it
    is), separable, with reflected edges so the border keeps its level."""
    batch, channels, height, width = images.shape
    radius = max(1, int(torch.ceil(3 * sigmas.max()).item()))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-offsets[None, :] ** 2 / (2 * sigmas.to(images.dtype).clamp_min(1e-3)[:, None] ** 2))
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # [B*C, k]
    flat = F.pad(images.reshape(1, batch * channels, height, width), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=batch * channels)
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


class ImageAugmenter:
    """Pixel noise and slight blur of standardised design images [B, C, H, W] for the chosen cases."""

    def __init__(self, config: AugmentationConfig):
        self.config = config
        self.generator: Optional[torch.Generator] = None  # the global stream, as FieldAugmenter

    @property
    def active(self) -> bool:
        return self.config.images_active

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        c, g, batch, device = self.config, self.generator, images.shape[0], images.device
        blurred = chosen(batch, c.image_blur_probability, g, device)
        if blurred.any():
            sigmas = (c.image_blur_sigma * torch.rand(batch, generator=g)).to(device)
            images = gaussian_blur(images, sigmas * blurred.to(sigmas.dtype))
        noisy = chosen(batch, c.image_noise_probability, g, device)
        if noisy.any():
            noise = torch.randn(images.shape, generator=g).to(device, images.dtype)
            images = images + c.image_noise_std * noise * noisy[:, None, None, None].to(images.dtype)
        return images


class DesignAugmenter:
    """The conditioner's training inputs: parameter jitter for parameters [B, p], noise and blur for
    images [B, C, H, W]."""

    def __init__(self, config: AugmentationConfig):
        self.parameters = ParameterPerturber(config)
        self.images = ImageAugmenter(config)

    @property
    def active(self) -> bool:
        return self.parameters.active or self.images.active

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() == 4:
            return self.images(inputs) if self.images.active else inputs
        return self.parameters(inputs) if self.parameters.active else inputs
