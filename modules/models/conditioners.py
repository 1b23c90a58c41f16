"""The latent conditioner the config asks for, built.

A conditioner maps one design (a CSV row of parameters or an image) to the VAE
latent code (a LatentPrediction). The three networks live in `conditioner_mlp.py`,
`conditioner_cnn.py` and `conditioner_vit.py` and end in latent_heads.LatentHeads;
this file builds the one the config asks for.
"""
from __future__ import annotations

from torch import nn

from modules.config.conditioner_rules import resolve_architecture
from modules.config.schema import ConditionerConfig
from modules.models.conditioner_cnn import ImageConditioner
from modules.models.conditioner_mlp import ParametricConditioner
from modules.models.conditioner_vit import VisionTransformerConditioner

# Attention heads of the ViT built from the config (embed_dim is rounded up to a multiple of it).
VIT_NUM_HEADS = 4


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
    architecture = resolve_architecture(cfg)
    latent = dict(latent_dim_main=latent_dim_main, latent_dim_hier=latent_dim_hier, num_hier_levels=num_hier_levels)
    if architecture == "mlp":
        # With image PCA the MLP reads the N whitened scores of each image instead of num_param values.
        num_inputs = cfg.image_pca_components if cfg.image_pca_components > 0 else cfg.num_params
        return ParametricConditioner(num_params=num_inputs, hidden_widths=tuple(cfg.mlp_widths or cfg.filters),
                                     dropout_rate=cfg.dropout_rate, **latent)
    if architecture == "cnn":
        return ImageConditioner(in_channels=in_channels, widths=tuple(cfg.filters), dropout_rate=cfg.dropout_rate,
                                use_spatial_attention=cfg.use_spatial_attention, spectral_norm=spectral_norm,
                                coordinate_channels=cfg.image_coordinates, features=cfg.image_features,
                                # the gray levels join the keypoint head's features; the pooled head has none
                                gray_levels=cfg.image_gray_levels if cfg.image_features == "keypoints" else 0,
                                **latent)
    embed_dim = -(-max(cfg.filters) // VIT_NUM_HEADS) * VIT_NUM_HEADS
    return VisionTransformerConditioner(in_channels=in_channels, image_size=cfg.image_size,
                                        patch_size=min(8, cfg.image_size), embed_dim=embed_dim,
                                        depth=len(cfg.filters), num_heads=VIT_NUM_HEADS,
                                        dropout_rate=cfg.dropout_rate, **latent)
