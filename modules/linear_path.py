"""PCA of the training cases, factored for the VAE's linear path.

A case is x [N nodes, T timesteps]. A spatial basis U [N, C] (C = filters[0]) of all
training snapshots comes first, so that the space-time PCA works on the small
projected fields a = U^T x [C, T] instead of [N x T]: the linear path then costs
C*T*d weights instead of N*T*d, which keeps meshes of 10^5 nodes affordable.
Pure tensor math: the caller passes the (scaled) training cases.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class LinearPathInit:
    spatial_basis: torch.Tensor
    """[N, C] orthonormal columns (zero columns when the snapshots have rank < C)."""
    channel_scale: torch.Tensor
    """[C] RMS of each spatial coefficient over the training snapshots; the VAE's channels carry a / scale."""
    coefficient_mean: torch.Tensor
    """[C*T] mean of the projected training cases a = U^T x (layout c*T + t)."""
    coefficient_basis: torch.Tensor
    """[C*T, d] principal directions of the projected cases (zero columns beyond their rank)."""
    coefficient_scale: torch.Tensor
    """[d] standard deviation along each direction, so the latent numbers have unit variance."""


def fit_linear_path(cases: torch.Tensor, channels: int, num_components: int,
                    node_weights: Optional[torch.Tensor] = None) -> LinearPathInit:
    """cases [k, N, T] (scaled training cases) -> the factored PCA.

    node_weights [N] (optional) measure errors per node; the bases are orthonormal in
    that weighted metric, so the PCA minimises the weighted (e.g. physical) error.
    """
    cases = cases.double()
    count, num_nodes, num_timesteps = cases.shape
    weights = node_weights.double() if node_weights is not None else torch.ones(num_nodes, dtype=torch.float64)
    weights = weights / weights.pow(2).mean().sqrt().clamp_min(1e-300)  # same normalisation as the VAE
    weighted = cases * weights[None, :, None]
    snapshots = weighted.permute(0, 2, 1).reshape(count * num_timesteps, num_nodes)
    rank = min(channels, *snapshots.shape)
    _, _, right = torch.linalg.svd(snapshots, full_matrices=False)
    spatial = torch.zeros(num_nodes, channels, dtype=torch.float64)
    spatial[:, :rank] = right[:rank].T
    # Each channel scaled to unit RMS over the training snapshots: optimiser steps of one size then
    # mean the same for strong and weak modes (unscaled, one Adam step undid the PCA start).
    rms = (snapshots @ spatial).pow(2).mean(dim=0).sqrt()
    channel_scale = torch.where(rms > 1e-12 * float(rms.max()), rms, torch.ones_like(rms))
    # The PCA itself runs on the unscaled coefficients (the metric that matters); the VAE folds the scale in.
    projected = torch.einsum("knt,nc->kct", weighted, spatial).reshape(count, channels * num_timesteps)
    mean = projected.mean(dim=0)
    centred = projected - mean
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
    found = min(num_components, directions.shape[0])
    basis = torch.zeros(channels * num_timesteps, num_components, dtype=torch.float64)
    basis[:, :found] = directions[:found].T
    scale = torch.ones(num_components, dtype=torch.float64)
    spread = singular[:found] / max(count - 1, 1) ** 0.5
    scale[:found] = spread.clamp_min(1e-6 * float(spread[0]) if found else 1e-6)
    return LinearPathInit(spatial_basis=spatial, channel_scale=channel_scale, coefficient_mean=mean,
                          coefficient_basis=basis, coefficient_scale=scale)
