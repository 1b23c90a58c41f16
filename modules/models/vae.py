"""The hierarchical VAE: frozen spatial basis + encoder + top-down decoder + the latent bookkeeping around them.

Shapes: B cases, N = num_nodes, T = num_timesteps, C = num_modes (spatial POD modes), Lm = latent_dim_main,
Lh = latent_dim_hier, K = num_hier_levels = len(encoder_filters) - 1. Hierarchical level lists always run
deep-to-shallow (k = 0 is next to the main latent).

With `design_features` > 0 the main latent has a design-conditioned prior N(mu_d(design), I) (a conditional
VAE): trained together, the decoder then sees latents laid out by the designs, which is what lets it
generalise to unseen designs from a few hundred cases (README, ablations). Without designs the prior is N(0, I).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from modules.config.schema import ModelConfig
from modules.models.case_pca import CasePCA
from modules.models.decoder import Decoder
from modules.models.distributions import DiagonalNormal
from modules.models.encoder import Encoder
from modules.models.latent_layout import LatentLayout
from modules.models.layers import mlp
from modules.models.spatial_basis import SpatialBasis

DESIGN_PRIOR_WIDTH = 256


@dataclass
class VAEOutput:
    """Result of `HierarchicalVAE.forward`."""

    recon: torch.Tensor
    """[B, N, T] reconstruction (scaled units), or [B, C, T] coefficients for a projected pass ([.., n] for n
    chosen timesteps)."""
    main_mu: torch.Tensor
    """[B, Lm] main posterior mean."""
    main_logvar: torch.Tensor
    """[B, Lm] main posterior log-variance (clamped)."""
    hier_mu: List[torch.Tensor]
    """K x [B, Lh] hierarchical posterior means."""
    hier_logvar: List[torch.Tensor]
    """K x [B, Lh] hierarchical posterior log-variances (clamped)."""
    kl_per_level: List[torch.Tensor]
    """(1 + K) x [B]: index 0 = KL(q(z_main) || prior), then KL(q(z_k) || p(z_k)) per level."""
    z_main: torch.Tensor
    """[B, Lm] main latent used by the decoder."""
    z_hier: List[torch.Tensor]
    """K x [B, Lh] hierarchical latents used by the decoder."""
    design_main_mu: Optional[torch.Tensor] = None
    """[B, Lm] the design prior's mean of the main latent (when designs were given)."""
    design_recon: Optional[torch.Tensor] = None
    """Decoded from the design prior alone (main = its mean, each level at its prior mean): what the VAE
    predicts for the design without seeing the field; same shape as recon."""


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

    def __init__(self, cfg: ModelConfig, num_nodes: int, num_timesteps: int, num_modes: int,
                 design_features: int = 0, case_pca: bool = False):
        super().__init__()
        if min(num_nodes, num_timesteps, num_modes) <= 0 or design_features < 0:
            raise ValueError(f"HierarchicalVAE needs num_nodes, num_timesteps, num_modes > 0 and design_features "
                             f">= 0, got {num_nodes}, {num_timesteps}, {num_modes}, {design_features}")
        self.cfg = cfg
        self.layout = LatentLayout.of(cfg)
        self.num_nodes = num_nodes
        self.num_timesteps = num_timesteps
        self.design_features = design_features
        self.basis = SpatialBasis(num_nodes, num_modes)
        self.encoder = Encoder(cfg, num_modes, num_timesteps)
        self.decoder = Decoder(cfg, num_modes, num_timesteps)
        self.design_prior = (mlp(design_features, DESIGN_PRIOR_WIDTH, cfg.latent_dim_main, 2)
                             if design_features else None)
        self.case_projection: Optional[nn.Linear] = None
        """With the case PCA path: coefficients [C * T] -> whitened PCA scores, added to the encoder's code."""
        if case_pca:
            self.add_case_pca()

    @property
    def case_pca(self) -> bool:
        """Whether the VAE has the case PCA path (models/case_pca.py)."""
        return self.case_projection is not None

    def add_case_pca(self, pca: Optional[CasePCA] = None) -> None:
        """Add the case PCA path: a linear map from the coefficients to the code, added to the encoder's output
        (whose main mean starts at zero), and one from the code to the coefficients, added to the decoder's MLP
        (whose output starts at zero). With `pca` (of the training cases' coefficients, in basis units) both are
        set to it, so that the untrained VAE reconstructs exactly as that PCA does; without, they wait for saved
        weights. Added after the other layers, so a run without the path draws the same weights as before."""
        flat_size = self.layout.flat_size
        self.case_projection = nn.Linear(self.num_modes * self.num_timesteps, flat_size).to(self.basis.modes.device)
        readout = self.decoder.add_case_readout(flat_size).to(self.basis.modes.device)
        with torch.no_grad():
            self.encoder.main_head.weight[:self.cfg.latent_dim_main].zero_()
            self.encoder.main_head.bias[:self.cfg.latent_dim_main].zero_()
        if pca is not None:
            pca.load_into(self.case_projection, readout)
        # Frozen: trained, the linear maps drifted from the PCA and the demo's edge designs reconstructed worse than
        # PCA itself (test 0.0526 against 0.0509); frozen, the MLPs learn only what the PCA misses (0.0486).
        for layer in (self.case_projection, readout):
            layer.requires_grad_(False)

    @property
    def num_modes(self) -> int:
        return self.basis.num_modes

    @property
    def num_hier_levels(self) -> int:
        return self.layout.levels

    @property
    def flat_latent_dim(self) -> int:
        """Width of `LatentCode.flat()`: Lm + K*Lh."""
        return self.layout.flat_size

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    @torch.no_grad()
    def set_mode_spread(self, coefficients: torch.Tensor) -> None:
        """Each mode's RMS over training coefficients [k, C, T] (floored at 1e-3 of the largest, so modes
        with almost nothing in them are not blown up): the unit encoder inputs and decoder outputs use."""
        spread = coefficients.double().pow(2).mean(dim=(0, 2)).sqrt()
        spread = spread.clamp_min(1e-3 * float(spread.max().clamp_min(1e-30))).float()
        self.encoder.mode_spread.copy_(spread)
        self.decoder.mode_spread.copy_(spread)

    def _encoded(self, coefficients: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor],
                                                             Optional[List[torch.Tensor]]]:
        """The encoder's (main_mu, main_logvar, features) and, with the case PCA path, each level's posterior
        offset (its latent numbers' PCA scores; the main ones are already added to main_mu)."""
        main_mu, main_logvar, features = self.encoder(coefficients)
        if self.case_projection is None:
            return main_mu, main_logvar, features, None
        main, levels = self.layout.split(self.case_projection(coefficients.flatten(1)))
        return main_mu + main, main_logvar, features, levels

    def _coefficients(self, x: torch.Tensor, projected: bool) -> torch.Tensor:
        expected = (self.num_modes, "modes") if projected else (self.num_nodes, "nodes")
        if x.dim() != 3 or x.shape[1] != expected[0] or x.shape[2] != self.num_timesteps:
            what = "projected VAE input (basis.project of the fields)" if projected else "VAE input"
            raise ValueError(f"{what} has shape {tuple(x.shape)}, expected [batch, {expected[0]} {expected[1]}, "
                             f"{self.num_timesteps} timesteps]; the model was built for that window of the data")
        return x if projected else self.basis.project(x)

    def _output(self, coefficients: torch.Tensor, projected: bool) -> torch.Tensor:
        return coefficients if projected else self.basis.readout(coefficients)

    def _check_design(self, design: torch.Tensor, batch: int) -> None:
        if self.design_prior is None:
            raise ValueError("this VAE was built without a design prior (design_features 0): pass no designs")
        if design.dim() != 2 or design.shape != (batch, self.design_features):
            raise ValueError(f"designs have shape {tuple(design.shape)}, expected [{batch}, {self.design_features}]")

    def forward(self, x: torch.Tensor, use_mean: bool = False, generator: Optional[torch.Generator] = None,
                projected: bool = False, design: Optional[torch.Tensor] = None,
                timesteps: Optional[torch.Tensor] = None) -> VAEOutput:
        """x [B, N, T] (or coefficients [B, C, T] when `projected`) -> VAEOutput. Latents are reparameterised
        samples of each posterior (drawn with `generator` if given), or the posterior means when `use_mean`,
        in which case recon == decode(*encode(x) means). design [B, D]: standardised design features; the main
        latent's KL is then taken to the design prior, and `design_recon` decoded from it. timesteps [B, n]:
        decode only those timesteps (training on a sample of the transient)."""
        coefficients = self._coefficients(x, projected)
        main_mu, main_logvar, features, offsets = self._encoded(coefficients)
        main = DiagonalNormal(main_mu, main_logvar)
        z_main = main.mu if use_mean else main.rsample(generator)
        top_down = self.decoder(z_main, encoder_features=features, stochastic=not use_mean, generator=generator,
                                timesteps=timesteps, posterior_offsets=offsets)
        design_mu = design_recon = None
        if design is not None:
            self._check_design(design, x.shape[0])
            design_mu = self.design_prior(design)
            main_kl = main.kl(DiagonalNormal(design_mu, torch.zeros_like(design_mu)))
            design_recon = self._output(self.decoder(design_mu, timesteps=timesteps).recon, projected)
        else:
            main_kl = main.kl_standard()
        kl_per_level = [main_kl] + [q.kl(p) for q, p in zip(top_down.posteriors, top_down.priors)]
        return VAEOutput(
            recon=self._output(top_down.recon, projected),
            main_mu=main.mu,
            main_logvar=main.logvar,
            hier_mu=[q.mu for q in top_down.posteriors],
            hier_logvar=[q.logvar for q in top_down.posteriors],
            kl_per_level=kl_per_level,
            z_main=z_main,
            z_hier=top_down.z_hier,
            design_main_mu=design_mu,
            design_recon=design_recon,
        )

    def encode(self, x: torch.Tensor, projected: bool = False) -> LatentCode:
        """x [B, N, T] (or coefficients when `projected`) -> LatentCode. Deterministic: each level's posterior
        is conditioned on the posterior means of the levels above it."""
        main_mu, main_logvar, features, offsets = self._encoded(self._coefficients(x, projected))
        top_down = self.decoder(main_mu, encoder_features=features, stochastic=False, with_recon=False,
                                posterior_offsets=offsets)
        return LatentCode(main_mu, DiagonalNormal(main_mu, main_logvar).logvar,
                          [q.mu for q in top_down.posteriors], [q.logvar for q in top_down.posteriors])

    def decode(self, z_main: torch.Tensor, z_hier: Optional[Sequence[torch.Tensor]] = None,
               projected: bool = False, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z_main [B, Lm] (+ K x [B, Lh]) -> [B, N, T] (coefficients [B, C, T] when `projected`); with z_hier
        None each level uses its prior mean. timesteps [B, n]: only those timesteps (projected only)."""
        if timesteps is not None and not projected:
            raise ValueError("decode: timesteps need projected=True (the basis reads out whole transients)")
        if z_main.dim() != 2 or z_main.shape[1] != self.cfg.latent_dim_main:
            raise ValueError(f"z_main has shape {tuple(z_main.shape)}, expected [batch, {self.cfg.latent_dim_main}]")
        if z_hier is not None:
            z_hier = list(z_hier)
            expected = (z_main.shape[0], self.cfg.latent_dim_hier)
            if len(z_hier) != self.num_hier_levels or any(tuple(z.shape) != expected for z in z_hier):
                raise ValueError(f"z_hier has shapes {[tuple(z.shape) for z in z_hier]}, expected "
                                 f"{self.num_hier_levels} tensors of shape {list(expected)} (deep-to-shallow)")
        return self._output(self.decoder(z_main, z_hier=z_hier, timesteps=timesteps).recon, projected)

    def decode_flat(self, flat: torch.Tensor, projected: bool = False,
                    timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, Lm + K*Lh] laid out as `LatentCode.flat()` -> [B, N, T] (or [B, C, T] when `projected`, [B, C, n]
        with timesteps [B, n])."""
        z_main, z_hier = self.layout.split(flat)
        return self.decode(z_main, z_hier, projected=projected, timesteps=timesteps)

    def design_latent(self, design: torch.Tensor) -> torch.Tensor:
        """Standardised designs [B, D] -> the flat latent the design prior gives them (main = its mean, each
        level at its prior mean given the levels above): the VAE's own prediction of a design's code."""
        self._check_design(design, design.shape[0])
        main = self.design_prior(design)
        levels = self.decoder(main, with_recon=False).z_hier
        return self.layout.join(main, levels)
