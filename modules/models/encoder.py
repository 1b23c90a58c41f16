"""Bottom-up half of the hierarchical VAE: mode coefficients -> main posterior + per-level features."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.layers import ConvBlock, FlatSummary, ResidualBlock, run_block, summary_width

# The main posterior starts narrow (std e^-3 of the unit-variance prior): with the KL weight small, the first
# steps would otherwise decode mostly noise.
INITIAL_POSTERIOR_LOGVAR = -6.0


class Encoder(nn.Module):
    """coefficients [B, C, T] -> (main_mu [B, Lm], main_logvar [B, Lm], features).

    Level i is ConvBlock(previous -> filters[i]) + ResidualBlock(filters[i]) over time, starting from the C
    spatial-mode coefficients, with no downsampling in time. `features[k]` ([B, summary_width]) summarises
    the encoder level that hierarchical level k of the decoder corrects: k = 0 is the deepest intermediate
    level (filters[-2]) and k = len(filters) - 2 the shallowest (filters[0]), i.e. deep-to-shallow, in
    decoding order.
    """

    def __init__(self, cfg: ModelConfig, num_modes: int, num_timesteps: int):
        super().__init__()
        filters = list(cfg.encoder_filters)
        large, spectral_norm = cfg.large, cfg.spectral_norm
        width = summary_width(cfg.latent_dim_hier)
        self.grad_checkpoint = cfg.grad_checkpoint
        self.levels = nn.ModuleList()
        in_channels = num_modes
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
        # Each mode's coefficients enter in units of its spread over the training cases (see Decoder).
        self.register_buffer("mode_spread", torch.ones(num_modes))
        self.main_head = nn.Linear(filters[-1] * num_timesteps, 2 * cfg.latent_dim_main)
        with torch.no_grad():
            self.main_head.bias[cfg.latent_dim_main:] = INITIAL_POSTERIOR_LOGVAR

    def forward(self, coefficients: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """-> (main_mu, main_logvar, features deep-to-shallow)."""
        h = coefficients / self.mode_spread.to(coefficients.dtype)[None, :, None]
        shallow_to_deep: List[torch.Tensor] = []
        for index, level in enumerate(self.levels):
            h = run_block(level, h, self.grad_checkpoint)
            if index < len(self.level_summaries):
                shallow_to_deep.append(self.level_summaries[index](h))
        main_mu, main_logvar = self.main_head(h.flatten(start_dim=1)).chunk(2, dim=-1)
        return main_mu, main_logvar, shallow_to_deep[::-1]
