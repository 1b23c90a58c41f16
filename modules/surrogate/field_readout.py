"""Mode coefficients [k, C, T] -> fields [k, T, N] in physical units: one matrix product, written in place.

The basis readout (modes x scale, then each node's inverse weight) and the node scaler's inverse (offset +
factor per node) are all linear with per-node factors, so they fold into one [C, N] matrix and one offset
row, and a field is offset + a^T M, computed straight into the caller's output array in its [T, N] layout.
Why: at the seed's size (95,008 nodes x 200 timesteps, 256 modes) the steps one after another moved each
predicted field through memory five times (readout, weights, the scaler's two operations, the transpose) and
held a [batch, N, T] temporary of each (4.9 GB for 64 designs); see benchmarks/predict_latency.py.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from modules.data.scaling import NodeScaler
from modules.models.spatial_basis import SpatialBasis


class FieldReadout:
    """The folded readout of one basis and scaler, for all channels or for `channels` (indices) only."""

    def __init__(self, basis: SpatialBasis, scaler: NodeScaler, device: torch.device,
                 channels: Optional[np.ndarray] = None) -> None:
        offset, factor = scaler.inverse_affine()
        modes, inverse_weights = basis.modes, basis.inverse_weights
        if channels is not None:  # the rows first: the band reads a few thousand of 95,008 nodes, many times
            rows = np.asarray(channels, dtype=np.int64)
            index = torch.as_tensor(rows, device=modes.device)
            modes, inverse_weights, offset, factor = modes[index], inverse_weights[index], offset[rows], factor[rows]
        modes, inverse_weights = modes.double().cpu(), inverse_weights.double().cpu()
        per_channel = torch.as_tensor(factor) * inverse_weights * float(basis.scale)
        # Folded in float64, then one rounding to float32: no less exact than the float32 steps it replaces.
        self.matrix = (modes * per_channel[:, None]).T.contiguous().float().to(device)
        self.offset = torch.as_tensor(offset, dtype=torch.float32).to(device)
        self.device = device

    @property
    def channels(self) -> int:
        return int(self.matrix.shape[1])

    @torch.no_grad()
    def write(self, coefficients: torch.Tensor, out: np.ndarray) -> None:
        """coefficients [k, C, T] (basis units) -> out [k, T, channels] float32 (C-contiguous), physical units."""
        count, _, timesteps = coefficients.shape
        if out.shape != (count, timesteps, self.channels) or out.dtype != np.float32 or not out.flags.c_contiguous:
            expected = (count, timesteps, self.channels)
            raise ValueError(f"the output must be a C-contiguous float32 array of shape {expected}, "
                             f"got {out.dtype} {out.shape}")
        rows = coefficients.to(self.device, torch.float32).transpose(1, 2).reshape(count * timesteps, -1)
        target = torch.from_numpy(out.reshape(count * timesteps, self.channels))
        if self.device.type == "cpu":
            torch.addmm(self.offset, rows, self.matrix, out=target)
        else:
            target.copy_(torch.addmm(self.offset, rows, self.matrix))
