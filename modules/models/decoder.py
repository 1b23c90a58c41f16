"""Top-down half of the hierarchical VAE: latents -> fields, with a learned prior per level."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.distributions import DiagonalNormal
from modules.models.latent_layout import LatentLayout
from modules.models.layers import ConvBlock, FlatSummary, ResidualBlock, conv1d, group_count, run_block, summary_width


@dataclass
class DecoderOutput:
    """What one top-down pass produced; level lists run deep-to-shallow (k = 0 first)."""

    recon: Optional[torch.Tensor]
    """[B, num_nodes, T] in (-1, 1); [B, filters[0], T] (before the output layer) for a projected pass;
    None when the pass stopped after the last latent."""
    priors: List[DiagonalNormal]
    """p(z_k | z_main, z_<k) per hierarchical level, each over [B, latent_dim_hier]."""
    posteriors: List[DiagonalNormal]
    """q(z_k | x, z_main, z_<k) per level; empty when no encoder features were given."""
    z_hier: List[torch.Tensor]
    """The latent used at each level, [B, latent_dim_hier]."""


class Decoder(nn.Module):
    """z_main [B, Lm] -> recon [B, num_nodes, T], mirroring the encoder.

    Linear(Lm -> filters[-1]*T) + ResidualBlock starts at the deepest width; each
    step to a shallower level j is ConvBlock(filters[j+1] -> filters[j]) (the state),
    then the level latent z_k (k = len(filters) - 2 - j) is drawn from the prior
    computed from that state, or from the posterior = prior + residual correction
    from the matching encoder feature (NVAE style), projected to [filters[j], T],
    added to the state and mixed by ResidualBlock(filters[j]). A 1x1 Conv1d maps
    filters[0] back to the nodes; tanh bounds the output to the scaled data range.
    """

    def __init__(self, cfg: ModelConfig, num_nodes: int, num_timesteps: int):
        super().__init__()
        filters = list(cfg.encoder_filters)
        large, spectral_norm = cfg.large, cfg.spectral_norm
        latent_dim_main, latent_dim_hier = cfg.latent_dim_main, cfg.latent_dim_hier
        width = summary_width(latent_dim_hier)
        self.latent_dim_hier = latent_dim_hier
        self.num_timesteps = num_timesteps
        self.grad_checkpoint = cfg.grad_checkpoint
        self.start = nn.Linear(latent_dim_main, filters[-1] * num_timesteps)
        self.start_block = ResidualBlock(filters[-1], spectral_norm)
        self.up_blocks = nn.ModuleList()
        self.level_blocks = nn.ModuleList()
        self.prior_summaries = nn.ModuleList()
        self.prior_heads = nn.ModuleList()
        self.posterior_heads = nn.ModuleList()
        self.latent_projections = nn.ModuleList()
        for deeper, channels in zip(filters[:0:-1], filters[-2::-1]):
            self.up_blocks.append(ConvBlock(deeper, channels, large, spectral_norm))
            self.level_blocks.append(ResidualBlock(channels, spectral_norm))
            self.prior_summaries.append(FlatSummary(channels, num_timesteps, width))
            self.prior_heads.append(nn.Linear(width, 2 * latent_dim_hier))
            correction = nn.Sequential(
                nn.Linear(2 * width, width),
                nn.GELU(),
                nn.Linear(width, 2 * latent_dim_hier),
            )
            # Zero correction at start: q = p, so the KL starts at 0 and each level only
            # moves away from its prior as far as reconstruction pays for.
            nn.init.zeros_(correction[-1].weight)
            nn.init.zeros_(correction[-1].bias)
            self.posterior_heads.append(correction)
            self.latent_projections.append(nn.Linear(latent_dim_hier, channels * num_timesteps))
        self.linear_readout: Optional[nn.Linear] = None
        if cfg.linear_path:
            # recon = basis( linear(z) + correction(stream) ): a linear map of all latent numbers (PCA at init)
            # plus what the convolutional stream adds, zero at init. No tanh: it would bend the linear part.
            self.linear_readout = nn.Linear(LatentLayout.of(cfg).flat_size, filters[0] * num_timesteps)
            correction = conv1d(filters[0], filters[0], 1, spectral_norm=False)
            nn.init.zeros_(correction.weight)
            nn.init.zeros_(correction.bias)
            self.stream_correction = nn.Sequential(nn.GroupNorm(group_count(filters[0]), filters[0]), nn.GELU(),
                                                   correction)
            self.output = nn.Sequential(conv1d(filters[0], num_nodes, 1, spectral_norm=False))
        else:
            # The residual stream is never normalised, so it grows during training; without this
            # final norm the tanh saturated (lr 5e-3 on the demo sweep) and the decoder stopped learning.
            self.output = nn.Sequential(
                nn.GroupNorm(group_count(filters[0]), filters[0]),
                nn.GELU(),
                conv1d(filters[0], num_nodes, 1, spectral_norm),
                nn.Tanh(),
            )

    @property
    def num_hier_levels(self) -> int:
        return len(self.up_blocks)

    def forward(self, z_main: torch.Tensor, encoder_features: Optional[List[torch.Tensor]] = None,
                z_hier: Optional[List[torch.Tensor]] = None, stochastic: bool = False,
                generator: Optional[torch.Generator] = None, with_recon: bool = True,
                linear_hier: Optional[torch.Tensor] = None, projected: bool = False) -> DecoderOutput:
        """One top-down pass.

        z_main: [B, Lm]. At each level the latent is z_hier[k] if given; else drawn
        from the posterior when `encoder_features` (deep-to-shallow, [B, summary_width]
        each) are given, otherwise from the prior; `stochastic` samples it (with
        `generator`, which must live on z_main's device), else its mean is used.
        `with_recon=False` stops after the last latent (for encoding only).
        linear_hier [B, K*Lh]: the encoder's linear-path share of each level's posterior mean.
        projected: stop before the (frozen, linear-path) output layer and return its input [B, filters[0], T].
        """
        if projected and self.linear_readout is None:
            raise ValueError("a projected decoder pass needs the linear path (ModelConfig.linear_path = True): "
                             "without it the output layer is not linear and cannot be skipped")
        batch = z_main.shape[0]
        h = self.start(z_main).view(batch, -1, self.num_timesteps)
        h = run_block(self.start_block, h, self.grad_checkpoint)
        priors: List[DiagonalNormal] = []
        posteriors: List[DiagonalNormal] = []
        used: List[torch.Tensor] = []
        for k in range(self.num_hier_levels):
            h = run_block(self.up_blocks[k], h, self.grad_checkpoint)
            state = self.prior_summaries[k](h)
            prior = DiagonalNormal(*self.prior_heads[k](state).chunk(2, dim=-1))
            priors.append(prior)
            chosen = prior
            if encoder_features is not None:
                correction = self.posterior_heads[k](torch.cat([encoder_features[k], state], dim=-1))
                delta_mu, delta_logvar = correction.chunk(2, dim=-1)
                if linear_hier is not None:
                    delta_mu = delta_mu + linear_hier[:, k * self.latent_dim_hier:(k + 1) * self.latent_dim_hier]
                chosen = DiagonalNormal(prior.mu + delta_mu, prior.logvar + delta_logvar)
                posteriors.append(chosen)
            if z_hier is not None:
                z = z_hier[k]
            else:
                z = chosen.rsample(generator) if stochastic else chosen.mu
            used.append(z)
            if not with_recon and k == self.num_hier_levels - 1:
                return DecoderOutput(None, priors, posteriors, used)
            h = h + self.latent_projections[k](z).view_as(h)
            h = run_block(self.level_blocks[k], h, self.grad_checkpoint)
        if not with_recon:
            return DecoderOutput(None, priors, posteriors, used)
        if self.linear_readout is not None:
            flat = torch.cat([z_main, *used], dim=-1)
            h = self.linear_readout(flat).view_as(h) + self.stream_correction(h)
        return DecoderOutput(h if projected else self.output(h), priors, posteriors, used)
