"""The hierarchical VAE: encoder + top-down decoder + the latent bookkeeping around them.

Shapes: B cases, N = num_nodes, T = num_timesteps, Lm = latent_dim_main,
Lh = latent_dim_hier, K = num_hier_levels = len(encoder_filters) - 1. Hierarchical
level lists always run deep-to-shallow (k = 0 is next to the main latent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.decoder import Decoder
from modules.models.distributions import DiagonalNormal
from modules.models.encoder import Encoder
from modules.models.latent_layout import LatentLayout
from modules.models.linear_path import LinearPathInit

# Posterior log-variance after the PCA start: narrow enough that sampling keeps PCA's accuracy.
INITIAL_POSTERIOR_LOGVAR = -8.0


@dataclass
class VAEOutput:
    """Result of `HierarchicalVAE.forward`."""

    recon: torch.Tensor
    """[B, N, T] reconstruction in (-1, 1); [B, filters[0], T] (before the output layer) for a projected pass."""
    main_mu: torch.Tensor
    """[B, Lm] main posterior mean."""
    main_logvar: torch.Tensor
    """[B, Lm] main posterior log-variance (clamped)."""
    hier_mu: List[torch.Tensor]
    """K x [B, Lh] hierarchical posterior means."""
    hier_logvar: List[torch.Tensor]
    """K x [B, Lh] hierarchical posterior log-variances (clamped)."""
    kl_per_level: List[torch.Tensor]
    """(1 + K) x [B]: index 0 = KL(q(z_main) || N(0, I)), then KL(q(z_k) || p(z_k)) per level."""
    z_main: torch.Tensor
    """[B, Lm] main latent used by the decoder."""
    z_hier: List[torch.Tensor]
    """K x [B, Lh] hierarchical latents used by the decoder."""


@dataclass
class LatentCode:
    """Deterministic posterior of a batch: the targets of the latent conditioner."""

    main_mu: torch.Tensor
    """[B, Lm]"""
    main_logvar: torch.Tensor
    """[B, Lm]"""
    hier_mu: List[torch.Tensor]
    """K x [B, Lh]"""
    hier_logvar: List[torch.Tensor]
    """K x [B, Lh]"""

    def flat(self) -> torch.Tensor:
        """[B, Lm + K*Lh]: main mean, then each level's mean, deep-to-shallow (LatentLayout)."""
        return torch.cat([self.main_mu, *self.hier_mu], dim=-1)

    def flat_logvar(self) -> torch.Tensor:
        """[B, Lm + K*Lh]: the log-variances in the same layout as `flat()`."""
        return torch.cat([self.main_logvar, *self.hier_logvar], dim=-1)


class HierarchicalVAE(nn.Module):
    """Hierarchical VAE over fields [B, num_nodes, num_timesteps] scaled to [-0.7, 0.7]."""

    def __init__(self, cfg: ModelConfig, num_nodes: int, num_timesteps: int):
        super().__init__()
        if num_nodes <= 0 or num_timesteps <= 0:
            raise ValueError(f"HierarchicalVAE needs num_nodes > 0 and num_timesteps > 0, "
                             f"got {num_nodes} and {num_timesteps}")
        self.cfg = cfg
        self.layout = LatentLayout.of(cfg)
        self.num_nodes = num_nodes
        self.num_timesteps = num_timesteps
        self.encoder = Encoder(cfg, num_nodes, num_timesteps)
        self.decoder = Decoder(cfg, num_nodes, num_timesteps)
        if cfg.linear_path:
            # Frozen: one AdamW step on these PCA bases (every weight moved by ~lr at once) took the
            # demo's training error from 0.48 % to 9.5 %; the rest of the network learns around them.
            for parameter in self.linear_path_parameters():
                parameter.requires_grad_(False)

    @property
    def num_hier_levels(self) -> int:
        return self.layout.levels

    @property
    def flat_latent_dim(self) -> int:
        """Width of `LatentCode.flat()`: Lm + K*Lh."""
        return self.layout.flat_size

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.num_nodes or x.shape[2] != self.num_timesteps:
            raise ValueError(f"VAE input has shape {tuple(x.shape)}, expected [batch, {self.num_nodes} nodes, "
                             f"{self.num_timesteps} timesteps]; the model was built for that window of the data")

    def _check_projected_input(self, h: torch.Tensor) -> None:
        if not self.cfg.linear_path:
            raise ValueError("a projected pass needs the linear path (ModelConfig.linear_path = True): only then "
                             "are the first and last layers a fixed linear basis that can be applied beforehand")
        channels = self.cfg.encoder_filters[0]
        if h.dim() != 3 or h.shape[1] != channels or h.shape[2] != self.num_timesteps:
            raise ValueError(f"projected VAE input has shape {tuple(h.shape)}, expected [batch, {channels} channels "
                             f"(filters[0]), {self.num_timesteps} timesteps]: encoder.input_projection of the fields")

    def forward(self, x: torch.Tensor, use_mean: bool = False,
                generator: Optional[torch.Generator] = None, projected: bool = False) -> VAEOutput:
        """x [B, N, T] -> VAEOutput. Latents are reparameterised samples of each
        posterior (drawn with `generator` if given), or the posterior means when
        `use_mean`, in which case recon == decode(*encode(x) means).

        projected (linear path only): x is encoder.input_projection(fields) [B, filters[0], T] and
        recon is the input of decoder.output [B, filters[0], T]; the frozen node-sized first and last
        layers are skipped, everything between them (and every random draw) is the same."""
        if projected:
            self._check_projected_input(x)
        else:
            self._check_input(x)
        main_mu, main_logvar, features, linear = self.encoder(x, projected=projected)
        main = DiagonalNormal(main_mu, main_logvar)
        z_main = main.mu if use_mean else main.rsample(generator)
        top_down = self.decoder(z_main, encoder_features=features, stochastic=not use_mean, generator=generator,
                                linear_hier=self._linear_hier(linear), projected=projected)
        kl_per_level = [main.kl_standard()]
        kl_per_level += [q.kl(p) for q, p in zip(top_down.posteriors, top_down.priors)]
        return VAEOutput(
            recon=top_down.recon,
            main_mu=main.mu,
            main_logvar=main.logvar,
            hier_mu=[q.mu for q in top_down.posteriors],
            hier_logvar=[q.logvar for q in top_down.posteriors],
            kl_per_level=kl_per_level,
            z_main=z_main,
            z_hier=top_down.z_hier,
        )

    def encode(self, x: torch.Tensor) -> LatentCode:
        """x [B, N, T] -> LatentCode. Deterministic: each level's posterior is
        conditioned on the posterior means of the levels above it."""
        self._check_input(x)
        main_mu, main_logvar, features, linear = self.encoder(x)
        main = DiagonalNormal(main_mu, main_logvar)
        top_down = self.decoder(main.mu, encoder_features=features, stochastic=False, with_recon=False,
                                linear_hier=self._linear_hier(linear))
        return LatentCode(main.mu, main.logvar, [q.mu for q in top_down.posteriors],
                          [q.logvar for q in top_down.posteriors])

    def linear_path_parameters(self) -> List[nn.Parameter]:
        """The PCA-initialised linear path: spatial bases and coefficient maps (empty without it)."""
        if not self.cfg.linear_path:
            return []
        modules = (self.encoder.input_projection, self.encoder.linear_coefficients, self.decoder.linear_readout,
                   self.decoder.output)
        return [parameter for module in modules for parameter in module.parameters()]

    def _linear_hier(self, linear: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if linear is None else linear[:, self.cfg.latent_dim_main:]

    @torch.no_grad()
    def initialise_linear_path(self, init: LinearPathInit, node_weights: Optional[torch.Tensor] = None) -> None:
        """Set the linear path to the PCA in `init` (see modules.models.linear_path): afterwards
        decode(encode(x)) is the PCA reconstruction of x, and training refines it.

        node_weights [N]: the metric the PCA was fitted in (None = plain); nodes of weight 0
        (constant in training) are decoded as 0, their exact scaled value."""
        if not self.cfg.linear_path:
            raise ValueError("initialise_linear_path needs ModelConfig.linear_path = True")
        weights = node_weights.double() if node_weights is not None else torch.ones(self.num_nodes, dtype=torch.float64)
        weights = weights / weights.pow(2).mean().sqrt().clamp_min(1e-300)  # only relative weights matter
        inverse = torch.where(weights > 1e-9 * float(weights.max()), 1.0 / weights.clamp_min(1e-300), 0.0)
        spatial, basis, scale, mean = (init.spatial_basis, init.coefficient_basis, init.coefficient_scale,
                                       init.coefficient_mean)
        encoder, decoder = self.encoder, self.decoder
        channel_scale = init.channel_scale
        encoder.input_projection.weight.copy_((spatial * weights[:, None] / channel_scale).T.unsqueeze(-1))
        encoder.input_projection.bias.zero_()
        per_feature = channel_scale.repeat_interleave(self.num_timesteps)  # [C*T], layout c*T + t
        whitened = basis / scale  # [C*T, d]
        encoder.linear_coefficients.weight.copy_((whitened * per_feature[:, None]).T)
        encoder.linear_coefficients.bias.copy_(-(whitened.T @ mean))
        decoder.linear_readout.weight.copy_(basis * scale / per_feature[:, None])
        decoder.linear_readout.bias.copy_(mean / per_feature)
        decoder.output[0].weight.copy_((spatial * channel_scale * inverse[:, None]).unsqueeze(-1))
        decoder.output[0].bias.zero_()
        # The non-linear parts start silent, so the starting point is exactly the PCA; posteriors start
        # narrow (std e^-4 of the unit-variance latents), else sampling noise would wipe out that start.
        lm = self.cfg.latent_dim_main
        nn.init.zeros_(encoder.main_head.weight)
        nn.init.zeros_(encoder.main_head.bias)
        encoder.main_head.bias[lm:] = INITIAL_POSTERIOR_LOGVAR
        for head in decoder.prior_heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        for correction in decoder.posterior_heads:
            correction[-1].bias[self.cfg.latent_dim_hier:] = INITIAL_POSTERIOR_LOGVAR

    def decode(self, z_main: torch.Tensor, z_hier: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """z_main [B, Lm] (+ K x [B, Lh]) -> [B, N, T]; with z_hier None each level uses its prior mean."""
        if z_main.dim() != 2 or z_main.shape[1] != self.cfg.latent_dim_main:
            raise ValueError(f"z_main has shape {tuple(z_main.shape)}, expected [batch, {self.cfg.latent_dim_main}]")
        if z_hier is not None:
            z_hier = list(z_hier)
            expected = (z_main.shape[0], self.cfg.latent_dim_hier)
            if len(z_hier) != self.num_hier_levels or any(tuple(z.shape) != expected for z in z_hier):
                raise ValueError(f"z_hier has shapes {[tuple(z.shape) for z in z_hier]}, expected "
                                 f"{self.num_hier_levels} tensors of shape {list(expected)} (deep-to-shallow)")
        return self.decoder(z_main, z_hier=z_hier).recon

    def decode_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """[B, Lm + K*Lh] laid out as `LatentCode.flat()` -> [B, N, T]."""
        z_main, z_hier = self.layout.split(flat)
        return self.decode(z_main, z_hier)
