"""What every latent conditioner returns, the shared output heads, and the factory.

A conditioner maps one design (a CSV row of parameters or an image) to the VAE
latent code: the main latent [B, latent_dim_main] and one hierarchical latent per
level [B, num_hier_levels, latent_dim_hier]. The three networks live in
`conditioner_mlp.py`, `conditioner_cnn.py` and `conditioner_vit.py`; this file holds
only what they share and `build_conditioner`, which picks one from the config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modules.config.conditioner_rules import resolve_architecture
from modules.config.schema import ConditionerConfig

# Attention heads of the ViT built from the config (embed_dim is rounded up to a multiple of it).
VIT_NUM_HEADS = 4


@dataclass
class LatentPrediction:
    """A predicted latent code.

    main: [B, latent_dim_main]; hier: [B, num_hier_levels, latent_dim_hier].
    """

    main: torch.Tensor
    hier: torch.Tensor

    def flat(self) -> torch.Tensor:
        """[B, latent_dim_main + num_hier_levels * latent_dim_hier]: main first, then each level in order."""
        return torch.cat([self.main, self.hier.reshape(self.hier.shape[0], -1)], dim=1)

    @classmethod
    def from_flat(cls, flat: torch.Tensor, latent_dim_main: int, latent_dim_hier: int,
                  num_hier_levels: int) -> "LatentPrediction":
        """Inverse of `flat()`: split a [B, Lm + levels * Lh] tensor back into main and hier."""
        expected = latent_dim_main + num_hier_levels * latent_dim_hier
        if flat.dim() != 2 or flat.shape[1] != expected:
            raise ValueError(f"expected a flat latent of shape [B, {expected}] "
                             f"({latent_dim_main} + {num_hier_levels} x {latent_dim_hier}), got {list(flat.shape)}")
        main = flat[:, :latent_dim_main]
        hier = flat[:, latent_dim_main:].reshape(flat.shape[0], num_hier_levels, latent_dim_hier)
        return cls(main=main, hier=hier)


class LatentHeads(nn.Module):
    """Two linear heads on a shared feature vector: [B, in_features] -> LatentPrediction."""

    def __init__(self, in_features: int, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int):
        super().__init__()
        self.latent_dim_hier = latent_dim_hier
        self.num_hier_levels = num_hier_levels
        self.main_head = nn.Linear(in_features, latent_dim_main)
        # A VAE with a single encoder level has no hierarchical latents; a zero-width
        # Linear would still allocate and warn, so the head is simply absent.
        self.hier_head = (nn.Linear(in_features, num_hier_levels * latent_dim_hier)
                          if num_hier_levels > 0 else None)

    def forward(self, features: torch.Tensor) -> LatentPrediction:
        main = self.main_head(features)
        if self.hier_head is None:
            hier = features.new_zeros(features.shape[0], 0, self.latent_dim_hier)
        else:
            hier = self.hier_head(features).reshape(features.shape[0], self.num_hier_levels, self.latent_dim_hier)
        return LatentPrediction(main=main, hier=hier)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters in `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_conditioner(cfg: ConditionerConfig, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int,
                      in_channels: int = 1, *, spectral_norm: bool = False) -> nn.Module:
    """The conditioner chosen by `cfg.architecture` ('auto': mlp for csv and for images with
    image_pca_components > 0, cnn for images otherwise).

    in_channels: image channels (1 grey, 3 RGB), ignored by the MLP.
    spectral_norm: spectral normalisation on the CNN's convolutions (ConditionerConfig has no field for it).
    The ViT is sized from `cfg.filters`: embed_dim = max(filters) rounded up to a multiple of
    VIT_NUM_HEADS, depth = len(filters), patch size 8 (or the image size, if smaller).
    """
    # Imported here because each network module imports LatentPrediction from this one.
    from modules.models.conditioner_cnn import ImageConditioner
    from modules.models.conditioner_mlp import ParametricConditioner
    from modules.models.conditioner_vit import VisionTransformerConditioner

    architecture = resolve_architecture(cfg)
    latent = dict(latent_dim_main=latent_dim_main, latent_dim_hier=latent_dim_hier, num_hier_levels=num_hier_levels)
    if architecture == "mlp":
        # With image PCA the MLP reads the N whitened scores of each image instead of num_param values.
        num_inputs = cfg.image_pca_components if cfg.image_pca_components > 0 else cfg.num_params
        return ParametricConditioner(num_params=num_inputs, hidden_widths=tuple(cfg.filters),
                                     dropout_rate=cfg.dropout_rate, **latent)
    if architecture == "cnn":
        return ImageConditioner(in_channels=in_channels, widths=tuple(cfg.filters), dropout_rate=cfg.dropout_rate,
                                use_spatial_attention=cfg.use_spatial_attention, spectral_norm=spectral_norm,
                                **latent)
    embed_dim = -(-max(cfg.filters) // VIT_NUM_HEADS) * VIT_NUM_HEADS
    return VisionTransformerConditioner(in_channels=in_channels, image_size=cfg.image_size,
                                        patch_size=min(8, cfg.image_size), embed_dim=embed_dim,
                                        depth=len(cfg.filters), num_heads=VIT_NUM_HEADS,
                                        dropout_rate=cfg.dropout_rate, **latent)
