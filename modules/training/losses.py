"""The VAE objective: reconstruction, KL and the KL-weight (beta) schedule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

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


def kl_sum(output: VAEOutput) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(sum over levels of the batch-mean KL, each level's batch-mean KL)."""
    level_means = [level.mean() for level in output.kl_per_level]
    return torch.stack(level_means).sum(), level_means


def vae_loss(output: VAEOutput, target: torch.Tensor, beta: float, cfg: TrainConfig,
             node_weights: Optional[torch.Tensor] = None) -> LossTerms:
    """Loss of one forward pass against the scaled target [B, N, T] (node_weights: see reconstruction_loss)."""
    recon = reconstruction_loss(output.recon, target, cfg.loss_type, node_weights)
    kl, level_means = kl_sum(output)
    total = cfg.recon_weight * recon + beta * kl
    return LossTerms(total=total, recon=recon, kl=kl, kl_per_level=[level.detach() for level in level_means])


def design_loss(cfg: TrainConfig, output: VAEOutput, design_recon: torch.Tensor,
                energy_per_element: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    """alpha x (reconstruction from the design prior alone + design_alignment_weight x energy_per_element x
    mean squared distance between the posterior and the design prior's main latent).

    The alignment is in units of the data's own mean squared value, so a weight of 1 makes a mismatch of one
    prior standard deviation per latent number cost as much as a 100 % relative reconstruction error. It is
    what keeps encoder and design prior on one layout of the latent space (POD-DL-ROM's latent term): the
    decoder then reconstructs and predicts from the same region."""
    alignment = (output.main_mu.float() - output.design_main_mu.float()).pow(2).mean()
    total = cfg.recon_weight * (design_recon + cfg.design_alignment_weight * energy_per_element * alignment)
    return total, {"recon_design": design_recon.item(), "alignment": alignment.item()}


def vae_total(cfg: TrainConfig, beta: float, recon: torch.Tensor, output: VAEOutput,
              design_recon: Optional[torch.Tensor], energy_per_element: float
              ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """alpha x recon + beta x KL (+ design_loss when the VAE has a design prior) and the metrics to log."""
    kl, _ = kl_sum(output)
    total = cfg.recon_weight * recon + beta * kl
    metrics = {"recon": recon.item(), "kl": kl.item()}
    if design_recon is not None:
        extra, design_metrics = design_loss(cfg, output, design_recon, energy_per_element)
        total = total + extra
        metrics.update(design_metrics)
    metrics["loss"] = total.item()
    return total, metrics
