"""The VAE objective: reconstruction, KL and the KL-weight (beta) schedule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from modules.config.schema import LOSS_TYPE_NAMES, TrainConfig
from modules.models.vae import VAEOutput


@dataclass
class LossTerms:
    """One batch's loss; `total` carries the gradient, the rest are for logging."""

    total: torch.Tensor
    """recon_weight * recon + beta * kl (scalar)."""
    recon: torch.Tensor
    """Reconstruction loss, mean over elements (scalar)."""
    kl: torch.Tensor
    """Sum over levels of the per-case KL, mean over the batch (scalar)."""
    kl_per_level: List[torch.Tensor]
    """Per-level KL, mean over the batch, detached (0-d tensors; call float() to log)."""


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, loss_type: int,
                        node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over all elements of 1 MSE, 2 MAE, 3 SmoothL1 (beta=1) or 4 Huber (delta=1).

    node_weights [N] (mean 1) weight each node of [B, N, T] fields; None = all equal."""
    reduction = "mean" if node_weights is None else "none"
    if loss_type == 1:
        loss = F.mse_loss(recon, target, reduction=reduction)
    elif loss_type == 2:
        loss = F.l1_loss(recon, target, reduction=reduction)
    elif loss_type == 3:
        loss = F.smooth_l1_loss(recon, target, beta=1.0, reduction=reduction)
    elif loss_type == 4:
        loss = F.huber_loss(recon, target, delta=1.0, reduction=reduction)
    else:
        valid = ", ".join(f"{number} ({name})" for number, name in LOSS_TYPE_NAMES.items())
        raise ValueError(f"unknown loss_type {loss_type!r}; valid types are {valid}")
    return loss if node_weights is None else (loss * node_weights[None, :, None]).mean()


def physical_node_weights(half_range: torch.Tensor) -> torch.Tensor:
    """[N] weights that turn a squared error on per-node scaled data into one in physical units
    (half_range**2), normalised to mean 1 so alpha keeps its meaning."""
    squared = half_range.double() ** 2
    return (squared / squared.mean().clamp_min(1e-300)).float()


def kl_weight(epoch: int, cfg: TrainConfig) -> float:
    """Beta for `epoch` (0-based): linear from cfg.init_beta at epoch 0 to
    cfg.beta_target at cfg.warmup_epochs, constant afterwards."""
    if epoch < 0:
        raise ValueError(f"kl_weight: epoch must be >= 0, got {epoch}")
    warmup = cfg.warmup_epochs
    if warmup == 0 or epoch >= warmup:
        return float(cfg.beta_target)
    fraction = epoch / warmup
    return float(cfg.init_beta + fraction * (cfg.beta_target - cfg.init_beta))


def vae_loss(output: VAEOutput, target: torch.Tensor, beta: float, cfg: TrainConfig,
             node_weights: Optional[torch.Tensor] = None) -> LossTerms:
    """Loss of one forward pass against the scaled target [B, N, T] (node_weights: see reconstruction_loss)."""
    recon = reconstruction_loss(output.recon, target, cfg.loss_type, node_weights)
    level_means = [level.mean() for level in output.kl_per_level]
    kl = torch.stack(level_means).sum()
    total = cfg.recon_weight * recon + beta * kl
    return LossTerms(total=total, recon=recon, kl=kl, kl_per_level=[level.detach() for level in level_means])
