"""Top-down half of the hierarchical VAE: latents -> spatial-mode coefficients, decoded one timestep at a time.

The case is summarised top-down in a state vector: h = MLP(z_main); at each hierarchical level k the prior
p(z_k | z_main, z_<k) is a linear head on h, the posterior adds a correction from the encoder's level
feature (NVAE's residual posterior), and z_k is merged back into h. Then one MLP decodes every timestep
from [h, time features(t)] to the C mode coefficients. The same weights serve all timesteps, so the decoder
learns from cases x timesteps samples instead of one sample per case: with 160 training cases the
case-level decoder of earlier versions never beat its PCA start on held-out cases (README, ablations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.distributions import DiagonalNormal
from modules.models.layers import mlp, summary_width


@dataclass
class DecoderOutput:
    """What one top-down pass produced; level lists run deep-to-shallow (k = 0 first)."""

    recon: Optional[torch.Tensor]
    """[B, C, T] coefficients (or [B, C, n] for n chosen timesteps); None when the pass stopped after the
    last latent."""
    priors: List[DiagonalNormal]
    """p(z_k | z_main, z_<k) per hierarchical level, each over [B, latent_dim_hier]."""
    posteriors: List[DiagonalNormal]
    """q(z_k | x, z_main, z_<k) per level; empty when no encoder features were given."""
    z_hier: List[torch.Tensor]
    """The latent used at each level, [B, latent_dim_hier]."""


def time_features(num_timesteps: int) -> torch.Tensor:
    """[T, 2F] sin/cos(pi k t) for k = 1..F, t in [0, 1]: the decoder's view of time. Up to F = T/2 (capped at
    32) frequencies: a raw t input made the decoder's error on the demo and the development sweeps 5-10 %
    (relative) worse at the same cost (README, ablations), as an MLP struggles to turn one number into
    oscillations."""
    count = max(1, min(32, num_timesteps // 2))
    t = torch.linspace(0.0, 1.0, num_timesteps)[:, None] if num_timesteps > 1 else torch.zeros(1, 1)
    angles = t * math.pi * torch.arange(1, count + 1, dtype=torch.float32)[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def at_timesteps(values: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """values [B, C, T] at each case's own timesteps [B, n] -> [B, C, n]."""
    return values.gather(2, timesteps[:, None, :].expand(-1, values.shape[1], -1))


class Decoder(nn.Module):
    """z_main [B, Lm] (+ hierarchical latents) -> coefficients [B, C, T] (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, num_modes: int, num_timesteps: int):
        super().__init__()
        width, depth = cfg.decoder_width, cfg.decoder_depth
        feature_width = summary_width(cfg.latent_dim_hier)
        self.latent_dim_hier = cfg.latent_dim_hier
        self.num_timesteps = num_timesteps
        self.start = mlp(cfg.latent_dim_main, width, width, 1)
        self.prior_heads = nn.ModuleList()
        self.posterior_heads = nn.ModuleList()
        self.merges = nn.ModuleList()
        for _ in range(cfg.num_hier_levels):
            prior = nn.Linear(width, 2 * cfg.latent_dim_hier)
            correction = mlp(width + feature_width, width, 2 * cfg.latent_dim_hier, 1)
            # Priors start at N(0, I) and posteriors at their prior: each level's KL starts at 0 and the level
            # only moves away from its prior as far as reconstruction pays for.
            for layer in (prior, correction[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.prior_heads.append(prior)
            self.posterior_heads.append(correction)
            self.merges.append(mlp(cfg.latent_dim_hier, width, width, 1))
        self.register_buffer("time", time_features(num_timesteps), persistent=False)
        self.readout = mlp(width + self.time.shape[1], width, num_modes, depth)
        # The readout predicts each mode's coefficient in units of that mode's spread over the training cases
        # (HierarchicalVAE.set_mode_spread): POD coefficients fall off by orders of magnitude from the first mode
        # to the last, and outputs of one common scale let every mode learn at the same pace.
        self.register_buffer("mode_spread", torch.ones(num_modes))
        self.case_readout: Optional[nn.Linear] = None
        """With the case PCA path: flat code -> mean + PCA field of the training cases [C * T] (add_case_readout)."""

    def add_case_readout(self, flat_size: int) -> nn.Linear:
        """The case PCA path's linear readout (to be loaded by CasePCA.load_into); the MLP readout's last layer
        goes to zero, so the decoder's output is that readout's alone until training moves it."""
        self.case_readout = nn.Linear(flat_size, self.readout[-1].out_features * self.num_timesteps)
        with torch.no_grad():
            self.readout[-1].weight.zero_()
            self.readout[-1].bias.zero_()
        return self.case_readout

    @property
    def num_hier_levels(self) -> int:
        return len(self.prior_heads)

    def forward(self, z_main: torch.Tensor, encoder_features: Optional[List[torch.Tensor]] = None,
                z_hier: Optional[List[torch.Tensor]] = None, stochastic: bool = False,
                generator: Optional[torch.Generator] = None, with_recon: bool = True,
                timesteps: Optional[torch.Tensor] = None,
                posterior_offsets: Optional[List[torch.Tensor]] = None) -> DecoderOutput:
        """One top-down pass.

        At each level the latent is z_hier[k] if given; else drawn from the posterior when `encoder_features`
        (deep-to-shallow, [B, summary_width] each) are given, otherwise from the prior; `stochastic` samples it
        (with `generator`, on z_main's device), else its mean is used. `with_recon=False` stops after the last
        latent (encoding only). timesteps [B, n] (optional): decode only those timesteps of each case.
        posterior_offsets (deep-to-shallow, [B, Lh] each): added to each level's posterior mean (the case PCA
        scores of that level's latent numbers, see HierarchicalVAE.add_case_pca)."""
        state = self.start(z_main)
        priors: List[DiagonalNormal] = []
        posteriors: List[DiagonalNormal] = []
        used: List[torch.Tensor] = []
        for k in range(self.num_hier_levels):
            prior = DiagonalNormal(*self.prior_heads[k](state).chunk(2, dim=-1))
            priors.append(prior)
            chosen = prior
            if encoder_features is not None:
                correction = self.posterior_heads[k](torch.cat([encoder_features[k], state], dim=-1))
                delta_mu, delta_logvar = correction.chunk(2, dim=-1)
                if posterior_offsets is not None:
                    delta_mu = delta_mu + posterior_offsets[k]
                chosen = DiagonalNormal(prior.mu + delta_mu, prior.logvar + delta_logvar)
                posteriors.append(chosen)
            if z_hier is not None:
                z = z_hier[k]
            else:
                z = chosen.rsample(generator) if stochastic else chosen.mu
            used.append(z)
            state = state + self.merges[k](z)
        if not with_recon:
            return DecoderOutput(None, priors, posteriors, used)
        recon = self.decode_timesteps(state, timesteps)
        if self.case_readout is not None:
            recon = recon + self.linear_readout(torch.cat([z_main, *used], dim=-1), timesteps)
        return DecoderOutput(recon, priors, posteriors, used)

    def linear_readout(self, flat: torch.Tensor, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The case PCA path: flat code [B, L] -> [B, C, T] (or [B, C, n] at timesteps [B, n])."""
        full = self.case_readout(flat).view(flat.shape[0], -1, self.num_timesteps)
        return full if timesteps is None else at_timesteps(full, timesteps)

    def decode_timesteps(self, state: torch.Tensor, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """state [B, W] -> [B, C, T] (or [B, C, n] at timesteps [B, n])."""
        time = self.time.to(state.dtype)
        if timesteps is None:
            time = time[None].expand(state.shape[0], -1, -1)
        else:
            time = time[timesteps]
        rows = torch.cat([state[:, None, :].expand(-1, time.shape[1], -1), time], dim=-1)
        return self.readout(rows).transpose(1, 2) * self.mode_spread.to(state.dtype)[None, :, None]
