"""The VAE's first and last layer: a frozen basis of spatial POD modes of the training snapshots.

A scaled case x [N nodes, T timesteps] is weighted per node (w, the physical weighting: each node's error
counts in physical units) and projected on C orthonormal modes U [N, C] of the weighted training snapshots:
a = U^T (w x) / s, with s one global scale that makes the coefficients O(1). Because U is orthonormal,
the weighted squared error of a reconstruction from coefficients a_hat is exactly

    sum_{n,t} w_n^2 (x_hat - x)^2 = s^2 ||a_hat - a||^2 + R,      R = ||w x - U U^T (w x)||^2,

R being the part of the case no mode holds. So the network can be trained on [C, T] instead of [N, T] with
the same loss (training/projected_training.py), at a cost that does not grow with the mesh.
Pure tensor math; the training stage passes the (scaled) training cases in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from modules.runtime import memory

# Modes whose snapshot energy is below this share of the strongest one are numerically zero.
RANK_TOLERANCE = 1e-12


@dataclass
class SpatialModes:
    """The POD of the weighted training snapshots."""

    modes: torch.Tensor
    """[N, C] float64, orthonormal columns, strongest first (zero columns beyond the snapshots' rank)."""
    energy: torch.Tensor
    """[C] float64 snapshot energy (squared singular value) of each mode."""
    total_energy: float
    """Energy of all snapshots (sum over every mode, also those not kept)."""

    def count_for(self, energy_fraction: float) -> int:
        """The fewest leading modes that hold `energy_fraction` of the snapshots' energy (at least 1)."""
        captured = torch.cumsum(self.energy, 0) / max(self.total_energy, 1e-300)
        reached = (captured >= energy_fraction).nonzero()
        count = int(reached[0]) + 1 if len(reached) else int((self.energy > 0).sum())
        return max(1, count)

    def leading(self, count: int) -> "SpatialModes":
        return SpatialModes(self.modes[:, :count], self.energy[:count], self.total_energy)


def unit_rms_weights(num_nodes: int, node_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """[N] float64 weights normalised to unit RMS; all ones without weights (only relative weights matter)."""
    weights = node_weights.double() if node_weights is not None else torch.ones(num_nodes, dtype=torch.float64)
    return weights / weights.pow(2).mean().sqrt().clamp_min(1e-300)


def fit_spatial_modes(cases: torch.Tensor, max_modes: int,
                      node_weights: Optional[torch.Tensor] = None) -> SpatialModes:
    """cases [k, N, T] (scaled) -> the leading `max_modes` POD modes of all k*T snapshots, weighted by
    node_weights (square-root weights of the squared error).

    The eigenproblem is solved on the smaller of the snapshot Gram matrix [kT x kT] and the node covariance
    [N x N], formed in node blocks with float64 sums, so a 95k-node mesh needs neither a [kT x N] float64
    copy nor the SVD workspace of one (an SVD of 14 such cases needed ~7 GiB; this needs the cases plus
    [kT x kT])."""
    count, num_nodes, num_timesteps = cases.shape
    weights = unit_rms_weights(num_nodes, node_weights)
    num_snapshots = count * num_timesteps

    def snapshot_block(nodes: slice, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """[kT, nodes in the slice] weighted snapshots of those nodes."""
        block = cases[:, nodes, :].double() * weights[None, nodes, None]
        return block.permute(0, 2, 1).reshape(num_snapshots, -1).to(dtype)

    node_blocks = list(memory.chunk_slices(num_nodes, memory.NODES_PER_BLOCK))
    modes = torch.zeros(num_nodes, max_modes, dtype=torch.float64)
    energy = torch.zeros(max_modes, dtype=torch.float64)
    if num_nodes <= num_snapshots:
        covariance = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
        for rows in node_blocks:
            left = snapshot_block(rows)
            for columns in node_blocks:
                covariance[rows, columns] = left.T @ snapshot_block(columns)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
        keep = min(max_modes, _rank(eigenvalues))
        modes[:, :keep] = eigenvectors[:, :keep]
    else:
        gram = torch.zeros(num_snapshots, num_snapshots, dtype=torch.float64)
        for nodes in node_blocks:
            # float32 products summed in float64 across blocks: twice as fast as float64 on the CPU, and the
            # rounding (~1e-6 of the strongest mode) only touches modes far below any error that matters here.
            block = snapshot_block(nodes, torch.float32)
            gram += (block @ block.T).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
        keep = min(max_modes, _rank(eigenvalues))
        # Modes U = S^T V / sigma, then re-orthonormalised: the Gram route loses some orthogonality in weak
        # modes, and QR keeps the nested spans (mode j spans the first j).
        mixing = eigenvectors[:, :keep] / eigenvalues[:keep].sqrt()
        found = torch.zeros(num_nodes, keep, dtype=torch.float64)
        for nodes in node_blocks:
            found[nodes] = snapshot_block(nodes).T @ mixing
        if keep:
            q, r = torch.linalg.qr(found)
            modes[:, :keep] = q * torch.sign(torch.diagonal(r))[None, :]
    energy[:keep] = eigenvalues[:keep]
    return SpatialModes(modes, energy, float(eigenvalues.sum()))


def _rank(eigenvalues: torch.Tensor) -> int:
    if len(eigenvalues) == 0:
        return 0
    return int((eigenvalues > RANK_TOLERANCE * float(eigenvalues[0].clamp_min(1e-300))).sum())


class SpatialBasis(nn.Module):
    """Frozen projection [B, N, T] -> [B, C, T] and readout [B, C, T] -> [B, N, T] (see the module docstring).

    Everything lives in buffers, so the basis travels with the model's state dict and never reaches an
    optimiser. Nodes of weight 0 (constant over the training cases) are read out as 0, their scaled value."""

    def __init__(self, num_nodes: int, num_modes: int):
        super().__init__()
        self.register_buffer("modes", torch.zeros(num_nodes, num_modes))
        self.register_buffer("weights", torch.ones(num_nodes))
        self.register_buffer("inverse_weights", torch.ones(num_nodes))
        self.register_buffer("scale", torch.ones(()))

    @property
    def num_modes(self) -> int:
        return self.modes.shape[1]

    @torch.no_grad()
    def set_modes(self, modes: torch.Tensor, node_weights: Optional[torch.Tensor], scale: float) -> None:
        """modes [N, C] orthonormal in the plain metric of the weighted snapshots; node_weights as in
        fit_spatial_modes; scale: the RMS of the training coefficients U^T (w x), so the network sees O(1)."""
        if tuple(modes.shape) != tuple(self.modes.shape):
            raise ValueError(f"modes have shape {tuple(modes.shape)}, this basis holds {tuple(self.modes.shape)}")
        weights = unit_rms_weights(self.modes.shape[0], node_weights)
        self.modes.copy_(modes)
        self.weights.copy_(weights)
        self.inverse_weights.copy_(torch.where(weights > 1e-9 * float(weights.max()), 1.0 / weights.clamp_min(1e-300),
                                               torch.zeros_like(weights)))
        self.scale.fill_(float(scale))

    def project(self, fields: torch.Tensor) -> torch.Tensor:
        """[B, N, T] scaled fields -> [B, C, T] coefficients in units of `scale`."""
        weighted = fields * self.weights.to(fields.dtype)[None, :, None]
        return torch.einsum("nc,bnt->bct", self.modes.to(fields.dtype), weighted) / self.scale.to(fields.dtype)

    def readout(self, coefficients: torch.Tensor) -> torch.Tensor:
        """[B, C, T] coefficients -> [B, N, T] scaled fields (the model's own output; predictions in physical
        units go through surrogate/field_readout.py, which folds this with the scaler's inverse)."""
        dtype = coefficients.dtype
        weighted = torch.einsum("nc,bct->bnt", self.modes.to(dtype), coefficients * self.scale.to(dtype))
        return weighted * self.inverse_weights.to(dtype)[None, :, None]
