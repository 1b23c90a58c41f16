"""CNN conditioner: a design image -> the VAE latent code."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from modules.config.schema import IMAGE_FEATURES
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


def with_pixel_coordinates(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C + 2, H, W]: the image and each pixel's x and y, both from -1 to 1 (CoordConv)."""
    batch, _, height, width = images.shape
    y = torch.linspace(-1.0, 1.0, height, dtype=images.dtype, device=images.device)
    x = torch.linspace(-1.0, 1.0, width, dtype=images.dtype, device=images.device)
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    coordinates = torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)
    return torch.cat([images, coordinates], dim=1)


class SpatialKeypoints(nn.Module):
    """[B, C, H, W] -> [B, 2C]: each channel's expected x and y (in [-1, 1]) under a softmax over its map.

    The soft-argmax of Levine et al. 2016 (deep spatial autoencoders): a channel that lights up where a load or a
    source is drawn reports that place as two numbers, which average pooling would have blurred away. The softmax
    temperature is learned.
    """

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = maps.shape
        weights = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1).view(batch, channels, height, width)
        y = torch.linspace(-1.0, 1.0, height, dtype=maps.dtype, device=maps.device)
        x = torch.linspace(-1.0, 1.0, width, dtype=maps.dtype, device=maps.device)
        expected_x = (weights.sum(dim=2) * x).sum(dim=-1)
        expected_y = (weights.sum(dim=3) * y).sum(dim=-1)
        return torch.cat([expected_x, expected_y], dim=1)


class GrayLevelGeometry(nn.Module):
    """[B, C, H, W] -> [B, C * (3 L + L (L - 1))]: where each gray level is drawn, and how much of it.

    Per channel, each image's pixels are spread over L soft gray-level bins across the image's own range (black to
    white of that drawing); per bin: the log share of pixels, their centroid (x, y in [-1, 1]), and the centroid's
    offset from every other bin's. Schematic design drawings draw each element in one flat gray, so these say where
    every element is, how large, and where it lies relative to the others: front-dev's flow arrow (its direction
    from the puff is the flow angle) read from 144 drawings at R^2 0.86 this way, 0.48 by the keypoint CNN alone
    (README, ablations). No weights: each feature is standardised by the training drawings' mean and spread
    (`fit_scale`, saved with the model), which puts the small offsets on the scale of the rest; unlike a
    BatchNorm it gives a drawing the same features in any batch, of any size, on any DDP rank.
    """

    def __init__(self, levels: int, channels: int):
        super().__init__()
        if levels < 2:
            raise ValueError(f"gray levels must be at least 2, got {levels}")
        self.levels = levels
        self.register_buffer("pairs", torch.triu_indices(levels, levels, offset=1), persistent=False)
        size = channels * (3 * levels + levels * (levels - 1))
        self.register_buffer("centre", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))

    @property
    def output_size(self) -> int:
        return len(self.centre)

    @torch.no_grad()
    def fit_scale(self, images: torch.Tensor, chunk: int = 64) -> None:
        """Standardise each feature by its mean and spread over `images` (the training designs); a feature that
        does not vary there (a gray level no drawing uses) is only centred."""
        raw = torch.cat([self.measure(images[start:start + chunk]) for start in range(0, len(images), chunk)])
        spread = raw.std(dim=0, unbiased=False)
        self.centre.copy_(raw.mean(dim=0))
        self.scale.copy_(torch.where(spread > 1e-6, spread, torch.ones_like(spread)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.measure(images) - self.centre) / self.scale

    def measure(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> the features before standardisation."""
        height, width = images.shape[-2:]
        pixels = images.flatten(2)
        low = pixels.amin(dim=-1, keepdim=True)
        span = (pixels.amax(dim=-1, keepdim=True) - low).clamp_min(1e-6)
        unit = (pixels - low) / span
        centres = torch.linspace(0.0, 1.0, self.levels, dtype=images.dtype, device=images.device)
        # Each pixel shared among Gaussian bins a sixth of the spacing wide: a flat gray near a centre goes whole to
        # its bin (wider bins leak the large background into its neighbours and hide a small drawn element: a
        # 3-pixel arrow beside 4,000 background pixels), one halfway between two centres is split between them.
        weights = torch.softmax(-0.5 * ((unit[..., None] - centres) * (6 * (self.levels - 1))) ** 2, dim=-1)
        mass = weights.sum(dim=2) + 1e-6
        y, x = torch.meshgrid(torch.linspace(-1.0, 1.0, height, dtype=images.dtype, device=images.device),
                              torch.linspace(-1.0, 1.0, width, dtype=images.dtype, device=images.device),
                              indexing="ij")
        centroid_x = (weights * x.reshape(1, 1, -1, 1)).sum(dim=2) / mass
        centroid_y = (weights * y.reshape(1, 1, -1, 1)).sum(dim=2) / mass
        first, second = self.pairs
        offsets = [centroid[..., first] - centroid[..., second] for centroid in (centroid_x, centroid_y)]
        share = torch.log(mass / (height * width) + 1e-4)
        return torch.cat([share, centroid_x, centroid_y, *offsets], dim=-1).flatten(1)


KEYPOINT_HIDDEN = 256


class ImageConditioner(nn.Module):
    """[B, in_channels, H, W] -> LatentPrediction(main [B, latent_dim_main], hier [B, levels, latent_dim_hier]).

    With coordinate_channels the stem also sees each pixel's x and y (CoordConv, Liu et al. 2018): convolutions
    are translation-equivariant and the global pooling then forgets where a feature was, while for a design
    drawing the position of a load or a source is often the parameter that matters most.
    `features` "pooled": the last map's global average. "keypoints": only the first two stages downsample (the last
    map is image/8), and the features are the last map's soft-argmax keypoints and average, plus the mean and the
    maximum of the stem's convolution before its GroupNorm, through one hidden layer. The per-image GroupNorm makes
    the network blind to absolute gray levels (a drawing's brightness that encodes a load's strength); the
    pre-norm stem statistics keep them (README ablations: strength read from impact-dev images at R^2 0.17-0.27
    pooled, 0.91-0.94 keypoints).
    A stride-2 3x3 stem to widths[0], then one stride-2 residual stage per entry of
    `widths` (3 widths take a 64x64 image to 4x4, 5 widths to 1x1), optional CBAM
    spatial attention (useful only while the last map is larger than 1x1),
    global average pooling (any H, W works), dropout and the two heads. Input is
    expected in [0, 1] or standardised.
    """

    def __init__(self, in_channels: int, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int,
                 widths: Sequence[int] = (16, 32, 64, 128, 256), dropout_rate: float = 0.1,
                 use_spatial_attention: bool = False, spectral_norm: bool = False,
                 coordinate_channels: bool = False, features: str = "pooled", gray_levels: int = 0):
        super().__init__()
        if not widths:
            raise ValueError("widths must list at least one stage width, e.g. (16, 32, 64, 128, 256)")
        if features not in IMAGE_FEATURES:
            raise ValueError(f"features must be one of {IMAGE_FEATURES}, got {features!r}")
        self.in_channels = in_channels
        self.coordinate_channels = coordinate_channels
        self.feature_kind = features
        # The stem halves the image at once: from one or three input channels a strided
        # 3x3 conv loses nothing, and it spares the first stage a full-resolution pass,
        # which dominated the cost when widths[0] is 64.
        self.stem = nn.Sequential(
            conv(in_channels + (2 if coordinate_channels else 0), widths[0], 3, 2, spectral_norm),
            nn.GroupNorm(group_count(widths[0]), widths[0]),
            nn.SiLU(),
        )
        stage_inputs = (widths[0],) + tuple(widths[:-1])
        keypoints = features == "keypoints"
        strides = [2 if index < 2 or not keypoints else 1 for index in range(len(widths))]
        self.stages = nn.Sequential(
            *(ResidualBlock(c_in, c_out, stride, spectral_norm)
              for c_in, c_out, stride in zip(stage_inputs, widths, strides))
        )
        self.spatial_attention = SpatialAttention() if use_spatial_attention else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        if gray_levels and not keypoints:
            raise ValueError("gray_levels needs features='keypoints' (they join the keypoint features)")
        self.gray_geometry = GrayLevelGeometry(gray_levels, in_channels) if gray_levels else None
        geometry_size = self.gray_geometry.output_size if gray_levels else 0
        if keypoints:
            self.keypoints = SpatialKeypoints()
            self.keypoint_mix = nn.Sequential(
                nn.Linear(3 * widths[-1] + 2 * widths[0] + geometry_size, KEYPOINT_HIDDEN), nn.SiLU())
        self.dropout = nn.Dropout(dropout_rate)
        self.heads = LatentHeads(KEYPOINT_HIDDEN if keypoints else widths[-1], latent_dim_main, latent_dim_hier,
                                 num_hier_levels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, H, W] -> [B, widths[-1]] (pooled) or [B, KEYPOINT_HIDDEN] (keypoints)."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape [B, {self.in_channels}, H, W], got {list(images.shape)}")
        drawn = (self.gray_geometry(images),) if self.gray_geometry is not None else ()
        if self.coordinate_channels:
            images = with_pixel_coordinates(images)
        stem_response = self.stem[0](images)
        hidden = self.stages(self.stem[1:](stem_response))
        if self.spatial_attention is not None:
            hidden = self.spatial_attention(hidden)
        pooled = self.pool(hidden).flatten(1)
        if self.feature_kind == "pooled":
            return pooled
        gray_levels = [stem_response.mean(dim=(2, 3)), stem_response.amax(dim=(2, 3))]
        return self.keypoint_mix(torch.cat([self.keypoints(hidden), pooled, *gray_levels, *drawn], dim=1))

    def fit_input_statistics(self, images: torch.Tensor) -> None:
        """Once, from the training designs' images, before training: the gray-level geometry's standardisation."""
        if self.gray_geometry is not None:
            self.gray_geometry.fit_scale(images)

    def forward(self, images: torch.Tensor) -> LatentPrediction:
        return self.heads(self.dropout(self.features(images)))
