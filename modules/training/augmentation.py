"""On-the-fly augmentation of training batches, vectorised over the batch (no Python loop over nodes).

Each transform picks its cases independently with its own probability. Temporal warping makes a new plausible
case, so the VAE reconstructs the warped field; Gaussian noise and node masking only corrupt the input, so
the VAE learns to return the clean field (denoising). Parameter perturbation jitters the conditioner's
(standardised) design inputs. Nothing here runs in validation: the objectives call it only in training mode.
"""
from __future__ import annotations

from typing import Optional

import torch

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
