"""Bottom-up half of the hierarchical VAE: fields -> main posterior + per-level features."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.latent_layout import LatentLayout
from modules.models.layers import ConvBlock, FlatSummary, ResidualBlock, conv1d, run_block, summary_width


class Encoder(nn.Module):
    """x [B, num_nodes, T] -> (main_mu [B, Lm], main_logvar [B, Lm], features).

    A 1x1 Conv1d first projects the nodes onto filters[0] channels (a learned spatial
    basis); then level i is ConvBlock(previous -> filters[i]) + ResidualBlock(filters[i]),
    with no downsampling in time. `features[k]` ([B, summary_width]) summarises the
    encoder level that hierarchical level k of the decoder corrects: k = 0 is the
    deepest intermediate level (filters[-2]) and k = len(filters) - 2 the shallowest
    (filters[0]), i.e. features come out deep-to-shallow, in decoding order.
    """

    def __init__(self, cfg: ModelConfig, num_nodes: int, num_timesteps: int):
        super().__init__()
        filters = list(cfg.encoder_filters)
        large, spectral_norm, latent_dim_main = cfg.large, cfg.spectral_norm, cfg.latent_dim_main
        width = summary_width(cfg.latent_dim_hier)
        linear_latents = LatentLayout.of(cfg).flat_size if cfg.linear_path else 0
        self.grad_checkpoint = cfg.grad_checkpoint
        self.latent_dim_main = latent_dim_main
        # With the linear path the projection is a (PCA-initialised) spatial basis; spectral norm would rescale it.
        self.input_projection = conv1d(num_nodes, filters[0], 1, spectral_norm and not linear_latents)
        # Linear path: every latent number gets a linear function of the projected field (PCA coefficients at init).
        self.linear_coefficients = nn.Linear(filters[0] * num_timesteps, linear_latents) if linear_latents else None
        self.levels = nn.ModuleList()
        in_channels = filters[0]
        for channels in filters:
            self.levels.append(nn.Sequential(
                ConvBlock(in_channels, channels, large, spectral_norm),
                ResidualBlock(channels, spectral_norm),
            ))
            in_channels = channels
        # One summary per intermediate level (all but the deepest), stored shallow-to-deep.
        self.level_summaries = nn.ModuleList(
            FlatSummary(channels, num_timesteps, width) for channels in filters[:-1]
        )
        self.main_head = nn.Linear(filters[-1] * num_timesteps, 2 * latent_dim_main)

    def forward(self, x: torch.Tensor, projected: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], Optional[torch.Tensor]]:
        """-> (main_mu, main_logvar, features deep-to-shallow, linear [B, Lm + K*Lh] or None).

        With the linear path, main_mu already includes its linear part; the rest of
        `linear` ([:, Lm:]) is added to the hierarchical posterior means by the decoder.
        projected: x is already input_projection's output [B, filters[0], T] (see modules.training.projected_training)."""
        h = x if projected else self.input_projection(x)
        linear = self.linear_coefficients(h.flatten(start_dim=1)) if self.linear_coefficients is not None else None
        shallow_to_deep: List[torch.Tensor] = []
        for index, level in enumerate(self.levels):
            h = run_block(level, h, self.grad_checkpoint)
            if index < len(self.level_summaries):
                shallow_to_deep.append(self.level_summaries[index](h))
        main_mu, main_logvar = self.main_head(h.flatten(start_dim=1)).chunk(2, dim=-1)
        if linear is not None:
            main_mu = main_mu + linear[:, : self.latent_dim_main]
        return main_mu, main_logvar, shallow_to_deep[::-1], linear
