"""Building blocks shared by the encoder and decoder.

All blocks work on feature maps [B, C, T]: C channels over T timesteps. None of
them changes T.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm
from torch.utils.checkpoint import checkpoint

KERNEL_SIZE = 3
MAX_GROUPS = 32
# Width of the per-level feature vectors that feed the prior and posterior heads: enough to carry a few
# Lh-sized Gaussians, small enough that Linear(C*T -> width) stays cheap on meshes of thousands of nodes.
MIN_SUMMARY_WIDTH = 64


def summary_width(latent_dim_hier: int) -> int:
    """Width of FlatSummary outputs for hierarchical latents of size `latent_dim_hier`."""
    return max(MIN_SUMMARY_WIDTH, 4 * latent_dim_hier)


def group_count(channels: int) -> int:
    """GroupNorm groups for `channels`: the largest of 32, 16, ..., 1 that divides it
    and still leaves at least two channels per group (one channel per group would
    normalise each channel's time series away)."""
    groups = MAX_GROUPS
    while groups > 1 and (channels % groups != 0 or channels // groups < 2):
        groups //= 2
    return groups


def conv1d(in_channels: int, out_channels: int, kernel_size: int, spectral_norm: bool) -> nn.Module:
    """Length-preserving Conv1d, optionally spectrally normalised."""
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return apply_spectral_norm(conv) if spectral_norm else conv


class ConvBlock(nn.Module):
    """[B, in, T] -> [B, out, T]: skip(x) + (GroupNorm, GELU, conv k=3) once, or twice when `large`.

    Pre-activation with a skip (identity, or a 1x1 conv when the width changes):
    a block ending in GroupNorm would divide each case by its own scale, and the
    amplitude of a field is often the very thing that varies across a sweep."""

    def __init__(self, in_channels: int, out_channels: int, large: bool, spectral_norm: bool):
        super().__init__()
        layers = []
        for index in range(2 if large else 1):
            channels = in_channels if index == 0 else out_channels
            layers += [
                nn.GroupNorm(group_count(channels), channels),
                nn.GELU(),
                conv1d(channels, out_channels, KERNEL_SIZE, spectral_norm),
            ]
        self.branch = nn.Sequential(*layers)
        self.skip = nn.Identity() if in_channels == out_channels else conv1d(in_channels, out_channels, 1,
                                                                              spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.branch(x)


class ResidualBlock(nn.Module):
    """[B, C, T] -> [B, C, T]: x + conv(GELU(GN(conv(GELU(GN(x)))))), pre-activation style
    so the skip path stays an identity (scale-preserving) and deep stacks train without warm-up tricks."""

    def __init__(self, channels: int, spectral_norm: bool):
        super().__init__()
        self.branch = nn.Sequential(
            nn.GroupNorm(group_count(channels), channels),
            nn.GELU(),
            conv1d(channels, channels, KERNEL_SIZE, spectral_norm),
            nn.GroupNorm(group_count(channels), channels),
            nn.GELU(),
            conv1d(channels, channels, KERNEL_SIZE, spectral_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class FlatSummary(nn.Module):
    """[B, C, T] -> [B, width]: GELU(Linear(C*T -> width)).

    A flattening Linear rather than pooling, because where in time a feature sits
    is exactly what a transient field's latent has to encode."""

    def __init__(self, channels: int, num_timesteps: int, width: int):
        super().__init__()
        self.linear = nn.Linear(channels * num_timesteps, width)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x.flatten(start_dim=1)))


def mlp(in_features: int, width: int, out_features: int, depth: int) -> nn.Sequential:
    """depth x (Linear, GELU) of `width`, then a Linear to `out_features`; the last module is that Linear."""
    layers: list = []
    for _ in range(depth):
        layers += [nn.Linear(in_features, width), nn.GELU()]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


def run_block(block: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """block(x), recomputed in backward instead of storing activations when
    `use_checkpoint` and gradients are being recorded.

    With spectral norm in training mode the recomputation runs one more power
    iteration, so backward sees a weight a hair different from forward; harmless
    (the estimate only tightens), and plain convs give identical gradients."""
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(block, x, use_reentrant=False)
    return block(x)
