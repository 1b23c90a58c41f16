"""CNN conditioner: a design image -> the VAE latent code."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from modules.models.latent_heads import LatentHeads
from modules.models.latent_layout import LatentPrediction


def group_count(channels: int, max_groups: int = 8) -> int:
    """The largest group count <= max_groups that divides `channels` (GroupNorm needs an exact split)."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, use_spectral_norm: bool) -> nn.Module:
    """A bias-free convolution (GroupNorm follows) with 'same' padding, optionally spectrally normalised."""
    layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return apply_spectral_norm(layer) if use_spectral_norm else layer


class SqueezeExcitation(nn.Module):
    """Reweights channels by a gate computed from their global average: [B, C, H, W] -> same."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.SiLU(),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the [mean, max] channel maps gives a per-pixel gate."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, 1, H, W] in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class ResidualBlock(nn.Module):
    """[B, in, H, W] -> [B, out, H/stride, W/stride]: two 3x3 convs with GroupNorm, SE, and a projected skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_spectral_norm: bool):
        super().__init__()
        self.body = nn.Sequential(
            conv(in_channels, out_channels, 3, stride, use_spectral_norm),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.SiLU(),
            conv(out_channels, out_channels, 3, 1, use_spectral_norm),
            nn.GroupNorm(group_count(out_channels), out_channels),
            SqueezeExcitation(out_channels),
        )
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                conv(in_channels, out_channels, 1, stride, use_spectral_norm),
                nn.GroupNorm(group_count(out_channels), out_channels),
            )
        else:
            self.skip = nn.Identity()
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.skip(x))


class ImageConditioner(nn.Module):
    """[B, in_channels, H, W] -> LatentPrediction(main [B, latent_dim_main], hier [B, levels, latent_dim_hier]).

    A stride-2 3x3 stem to widths[0], then one stride-2 residual stage per entry of
    `widths` (3 widths take a 64x64 image to 4x4, 5 widths to 1x1), optional CBAM
    spatial attention (useful only while the last map is larger than 1x1),
    global average pooling (any H, W works), dropout and the two heads. Input is
    expected in [0, 1] or standardised.
    """

    def __init__(self, in_channels: int, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int,
                 widths: Sequence[int] = (16, 32, 64, 128, 256), dropout_rate: float = 0.1,
                 use_spatial_attention: bool = False, spectral_norm: bool = False):
        super().__init__()
        if not widths:
            raise ValueError("widths must list at least one stage width, e.g. (16, 32, 64, 128, 256)")
        self.in_channels = in_channels
        # The stem halves the image at once: from one or three input channels a strided
        # 3x3 conv loses nothing, and it spares the first stage a full-resolution pass,
        # which dominated the cost when widths[0] is 64.
        self.stem = nn.Sequential(
            conv(in_channels, widths[0], 3, 2, spectral_norm),
            nn.GroupNorm(group_count(widths[0]), widths[0]),
            nn.SiLU(),
        )
        stage_inputs = (widths[0],) + tuple(widths[:-1])
        self.stages = nn.Sequential(
            *(ResidualBlock(c_in, c_out, 2, spectral_norm) for c_in, c_out in zip(stage_inputs, widths))
        )
        self.spatial_attention = SpatialAttention() if use_spatial_attention else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.heads = LatentHeads(widths[-1], latent_dim_main, latent_dim_hier, num_hier_levels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, H, W] -> [B, widths[-1]]."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape [B, {self.in_channels}, H, W], got {list(images.shape)}")
        hidden = self.stages(self.stem(images))
        if self.spatial_attention is not None:
            hidden = self.spatial_attention(hidden)
        return self.pool(hidden).flatten(1)

    def forward(self, images: torch.Tensor) -> LatentPrediction:
        return self.heads(self.dropout(self.features(images)))
