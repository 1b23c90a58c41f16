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

from modules.runtime import memory


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


def unit_rms_weights(num_nodes: int, node_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """[N] float64 weights normalised to unit RMS (the VAE's own normalisation); all ones without weights."""
    weights = node_weights.double() if node_weights is not None else torch.ones(num_nodes, dtype=torch.float64)
    return weights / weights.pow(2).mean().sqrt().clamp_min(1e-300)


def spatial_pod(cases: torch.Tensor, channels: int, node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """cases [k, N, T] -> [N, C] orthonormal spatial modes of all k*T snapshots (weighted by node_weights),
    strongest first; zero columns when the snapshots have rank < C.

    The eigenproblem is solved on the smaller of the snapshot Gram matrix [kT x kT] and the node covariance
    [N x N], formed in node chunks with float64 sums, so a 95k-node mesh needs neither an [kT x N] float64
    copy nor the SVD workspace of one (an SVD of 14 such cases needed ~7 GiB; this needs the cases plus
    [kT x kT])."""
    count, num_nodes, num_timesteps = cases.shape
    weights = unit_rms_weights(num_nodes, node_weights)
    num_snapshots = count * num_timesteps

    def snapshot_chunk(nodes: slice, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """[kT, nodes in the slice] weighted snapshots of those nodes."""
        chunk = cases[:, nodes, :].double() * weights[None, nodes, None]
        return chunk.permute(0, 2, 1).reshape(num_snapshots, -1).to(dtype)

    node_blocks = list(memory.chunk_slices(num_nodes, memory.NODES_PER_BLOCK))
    spatial = torch.zeros(num_nodes, channels, dtype=torch.float64)
    if num_nodes <= num_snapshots:
        covariance = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
        for rows in node_blocks:
            left = snapshot_chunk(rows)
            for columns in node_blocks:
                covariance[rows, columns] = left.T @ snapshot_chunk(columns)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = eigenvalues.flip(0)
        keep = int((order > 1e-12 * float(order[0].clamp_min(1e-300))).sum()) if num_nodes else 0
        keep = min(keep, channels)
        spatial[:, :keep] = eigenvectors.flip(1)[:, :keep]
        return spatial
    gram = torch.zeros(num_snapshots, num_snapshots, dtype=torch.float64)
    for nodes in node_blocks:
        # float32 products summed in float64 across chunks: twice as fast as float64 on the CPU, and the
        # rounding (~1e-6 of the strongest mode) only touches modes far below any error that matters here.
        chunk = snapshot_chunk(nodes, torch.float32)
        gram += (chunk @ chunk.T).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    keep = min(channels, int((eigenvalues > 1e-12 * float(eigenvalues[0].clamp_min(1e-300))).sum()))
    # Right singular vectors V = S^T U / sigma, then re-orthonormalised: the Gram route loses some
    # orthogonality in weak modes, and QR keeps the nested spans (mode j spans the first j).
    mixing = eigenvectors[:, :keep] / eigenvalues[:keep].sqrt()
    modes = torch.zeros(num_nodes, keep, dtype=torch.float64)
    for nodes in node_blocks:
        modes[nodes] = snapshot_chunk(nodes).T @ mixing
    if keep:
        q, r = torch.linalg.qr(modes)
        spatial[:, :keep] = q * torch.sign(torch.diagonal(r))[None, :]
    return spatial


def project_cases(cases: torch.Tensor, spatial: torch.Tensor, node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """cases [k, N, T] -> spatial coefficients a = U^T (w x) [k, C, T] float64.

    The product runs in float32, the precision of the VAE's own (frozen) projection layer: in float64
    it took ~1.7 s per 95k-node case on 2 cores, the whole pass over a seed-size sweep ~11 minutes."""
    weights = unit_rms_weights(cases.shape[1], node_weights).float()
    basis = spatial.T.float()  # [C, N]
    return torch.stack([basis @ (case.float() * weights[:, None]) for case in cases]).double()


def fit_coefficient_pca(projected: torch.Tensor, spatial: torch.Tensor, num_components: int) -> LinearPathInit:
    """The space-time PCA of projected cases [k, C, T] (all training cases, e.g. gathered chunk by chunk)."""
    count, channels, num_timesteps = projected.shape
    # Each channel scaled to unit RMS over the training snapshots: optimiser steps of one size then
    # mean the same for strong and weak modes (unscaled, one Adam step undid the PCA start).
    rms = projected.double().pow(2).mean(dim=(0, 2)).sqrt()
    channel_scale = torch.where(rms > 1e-12 * float(rms.max()), rms, torch.ones_like(rms))
    # The PCA itself runs on the unscaled coefficients (the metric that matters); the VAE folds the scale in.
    flat = projected.double().reshape(count, channels * num_timesteps)
    mean = flat.mean(dim=0)
    _, singular, directions = torch.linalg.svd(flat - mean, full_matrices=False)
    found = min(num_components, directions.shape[0])
    basis = torch.zeros(channels * num_timesteps, num_components, dtype=torch.float64)
    basis[:, :found] = directions[:found].T
    scale = torch.ones(num_components, dtype=torch.float64)
    spread = singular[:found] / max(count - 1, 1) ** 0.5
    scale[:found] = spread.clamp_min(1e-6 * float(spread[0]) if found else 1e-6)
    return LinearPathInit(spatial_basis=spatial, channel_scale=channel_scale, coefficient_mean=mean,
                          coefficient_basis=basis, coefficient_scale=scale)


def fit_linear_path(cases: torch.Tensor, channels: int, num_components: int,
                    node_weights: Optional[torch.Tensor] = None) -> LinearPathInit:
    """cases [k, N, T] (scaled training cases) -> the factored PCA, all from the same cases.

    node_weights [N] (optional) measure errors per node; the bases are orthonormal in
    that weighted metric, so the PCA minimises the weighted (e.g. physical) error.
    """
    spatial = spatial_pod(cases, channels, node_weights)
    return fit_coefficient_pca(project_cases(cases, spatial, node_weights), spatial, num_components)
