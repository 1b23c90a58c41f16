"""The output heads every latent conditioner ends in: shared features -> the VAE's latent code."""
from __future__ import annotations

import torch
from torch import nn

from modules.models.latent_layout import LatentLayout, LatentPrediction


class LatentHeads(nn.Module):
    """Two linear heads on a shared feature vector: [B, in_features] -> LatentPrediction."""

    def __init__(self, in_features: int, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int):
        super().__init__()
        self.layout = LatentLayout(latent_dim_main, latent_dim_hier, num_hier_levels)
        self.main_head = nn.Linear(in_features, latent_dim_main)
        # A VAE with a single encoder level has no hierarchical latents; a zero-width
        # Linear would still allocate and warn, so the head is simply absent.
        self.hier_head = (nn.Linear(in_features, self.layout.flat_size - latent_dim_main)
                          if num_hier_levels > 0 else None)

    def forward(self, features: torch.Tensor) -> LatentPrediction:
        main = self.main_head(features)
        layout = self.layout
        if self.hier_head is None:
            hier = features.new_zeros(features.shape[0], 0, layout.hier)
        else:
            hier = self.hier_head(features).reshape(features.shape[0], layout.levels, layout.hier)
        return LatentPrediction(main=main, hier=hier)
