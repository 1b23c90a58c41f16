"""Per-node scaling of the field to [-0.7, 0.7] (per channel: each variable of a node has its own).

`scaler minmax` (default): each node's [min, max] over the training cases (all their used timesteps) maps
to [-0.7, 0.7]. `scaler robust`: median -+ robust_clip x 1.4826 MAD maps to it and values beyond are
clipped (modules.data.robust_scaling). Either way the scaler is an affine map per node given by the two
values that land on -+0.7 (`data_min`, `data_max`), so everything that converts scaled errors to physical
units reads the same two arrays. Fitted on the training cases only, read in chunks so the sweep never has
to fit in memory. The legacy range 0.7 leaves headroom below the decoder's tanh-like saturation for
validation values that fall slightly outside the training range.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from modules.config.schema import DataConfig
from modules.data.robust_scaling import RobustFit, robust_bounds
from modules.data.sweep_file import cases_per_chunk, read_cases
from modules.errors import CheckpointError
from modules.runtime import memory, progress

SCALED_LIMIT = 0.7
"""Scaled training values lie in [-SCALED_LIMIT, SCALED_LIMIT]."""

ArrayLike = Union[np.ndarray, torch.Tensor]


class NodeScaler:
    """Maps each node's values from [min, max] over the training cases to [-0.7, 0.7].

    Stored as a centre and half-range per node. A constant node (half-range 0)
    maps to 0 and inverts to its constant exactly, without dividing by zero.
    """

    def __init__(self, clipped: bool = False) -> None:
        self.data_min: Optional[np.ndarray] = None  # float64 [num_nodes]: maps to -SCALED_LIMIT
        self.data_max: Optional[np.ndarray] = None  # float64 [num_nodes]: maps to +SCALED_LIMIT
        self.clipped = clipped
        """Scaled values are clipped to [-SCALED_LIMIT, SCALED_LIMIT] (the robust scaler's outlier clip)."""

    # ------------------------------------------------------------------ fitting

    @property
    def fitted(self) -> bool:
        return self.data_min is not None

    @property
    def num_nodes(self) -> int:
        self._require_fitted()
        return int(self.data_min.shape[0])

    def fit(self, array: np.ndarray, train_indices: Sequence[int], data: DataConfig,
            chunk_cases: Optional[int] = None) -> "NodeScaler":
        """Fit on the windowed training cases of the (memory-mapped) sweep, chunk_cases at a time."""
        train_indices = [int(i) for i in train_indices]
        if not train_indices:
            raise ValueError("NodeScaler.fit needs at least one training case")
        chunk = chunk_cases if chunk_cases is not None else cases_per_chunk(array)
        running_min = np.full(data.channels, np.inf)
        running_max = np.full(data.channels, -np.inf)
        for chunk_indices in progress.counted(memory.chunks(train_indices, chunk), len(train_indices),
                                              "data: NaN/Inf check + scaler fit, training cases"):
            cases = read_cases(array, chunk_indices, data)
            np.minimum(running_min, cases.min(axis=(0, 1)), out=running_min)
            np.maximum(running_max, cases.max(axis=(0, 1)), out=running_max)
        self._set_bounds(running_min, running_max)
        return self

    def fit_robust(self, array: np.ndarray, train_indices: Sequence[int], data: DataConfig) -> "RobustFit":
        """scaler robust: median -+ robust_clip x 1.4826 MAD of each node over the training cases, clipped beyond."""
        fitted = robust_bounds(array, train_indices, data, data.robust_clip)
        self._set_bounds(fitted.data_min, fitted.data_max)
        self.clipped = True
        return fitted

    def fit_arrays(self, cases: ArrayLike) -> "NodeScaler":
        """Fit on in-memory training cases [cases, num_timesteps, num_nodes]."""
        values = _to_numpy(cases)
        if values.ndim != 3:
            raise ValueError(f"fit_arrays expects [cases, num_timesteps, num_nodes], got shape {values.shape}")
        self._set_bounds(values.min(axis=(0, 1)), values.max(axis=(0, 1)))
        return self

    def _set_bounds(self, data_min: np.ndarray, data_max: np.ndarray) -> None:
        self.data_min = np.asarray(data_min, dtype=np.float64).copy()
        self.data_max = np.asarray(data_max, dtype=np.float64).copy()

    # ------------------------------------------------------------------ applying

    def _params(self):
        """Per-node centre, forward factor (0 for constant nodes) and backward factor, all float64."""
        self._require_fitted()
        center = (self.data_max + self.data_min) / 2.0
        half_range = (self.data_max - self.data_min) / 2.0
        constant = half_range <= 0
        forward = np.where(constant, 0.0, SCALED_LIMIT / np.where(constant, 1.0, half_range))
        backward = half_range / SCALED_LIMIT
        return center, forward, backward

    def transform(self, x: ArrayLike, node_axis: int = -1) -> ArrayLike:
        """Scale x [..., num_timesteps, num_nodes] (nodes on node_axis); returns the same type."""
        center, forward, _ = self._params()
        values, (center, forward) = self._prepare(x, node_axis, center, forward)
        scaled = (values - center) * forward
        if self.clipped:
            scaled = scaled.clamp(-SCALED_LIMIT, SCALED_LIMIT) if isinstance(scaled, torch.Tensor) else \
                np.clip(scaled, -SCALED_LIMIT, SCALED_LIMIT, out=scaled)
        return self._finish(x, scaled)

    def inverse_affine(self) -> Tuple[np.ndarray, np.ndarray]:
        """(offset, factor) float64 per node with physical = offset + factor x scaled: `inverse` as two arrays."""
        center, _, backward = self._params()
        return center, backward

    def inverse(self, x: ArrayLike, node_axis: int = -1) -> ArrayLike:
        """Undo transform: scaled x back to physical units (VAE output [batch, nodes, time]: node_axis=-2)."""
        center, _, backward = self._params()
        values, (center, backward) = self._prepare(x, node_axis, center, backward)
        return self._finish(x, values * backward + center)

    def _prepare(self, x: ArrayLike, node_axis: int, *params: np.ndarray):
        """x in its compute dtype, and params shaped to broadcast along node_axis."""
        if x.shape[node_axis] != self.num_nodes:
            raise ValueError(f"NodeScaler was fitted on {self.num_nodes} nodes but axis {node_axis} of the input "
                             f"has {x.shape[node_axis]} (input shape {tuple(x.shape)})")
        shape = [1] * len(x.shape)
        shape[node_axis] = self.num_nodes
        if isinstance(x, torch.Tensor):
            # Tensors stay in their own float dtype and device: float64 is slow or missing on accelerators.
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return x.to(dtype), [torch.as_tensor(p.reshape(shape), dtype=dtype, device=x.device) for p in params]
        # numpy is computed in float64 so training values land inside [-0.7, 0.7] after rounding to float32.
        return np.asarray(x, dtype=np.float64), [p.reshape(shape) for p in params]

    @staticmethod
    def _finish(x: ArrayLike, result: ArrayLike) -> ArrayLike:
        if isinstance(x, torch.Tensor):
            return result
        return result.astype(x.dtype if x.dtype.kind == "f" else np.float32, copy=False)

    def _require_fitted(self) -> None:
        if self.data_min is None:
            raise RuntimeError("NodeScaler is not fitted: call fit/fit_arrays or load a state dict first")

    # ------------------------------------------------------------------ saving

    def state_dict(self) -> Dict[str, Union[torch.Tensor, float]]:
        """Plain tensors and floats, loadable with torch.load(weights_only=True)."""
        self._require_fitted()
        return {
            "data_min": torch.from_numpy(self.data_min.copy()),
            "data_max": torch.from_numpy(self.data_max.copy()),
            "scaled_limit": float(SCALED_LIMIT),
            "clipped": bool(self.clipped),
        }

    @classmethod
    def from_state_dict(cls, state: Dict[str, Union[torch.Tensor, float]]) -> "NodeScaler":
        """Rebuild a scaler saved by state_dict()."""
        missing = [key for key in ("data_min", "data_max", "scaled_limit") if key not in state]
        if missing:
            raise CheckpointError(f"the saved scaler lacks {', '.join(missing)}\n"
                                  f"    fix: use a checkpoint written by this version of SimulGenVAE, or retrain")
        if float(state["scaled_limit"]) != SCALED_LIMIT:
            raise CheckpointError(f"the saved scaler maps to +-{state['scaled_limit']} but this version uses "
                                  f"+-{SCALED_LIMIT}\n    fix: retrain the VAE with this version")
        scaler = cls(clipped=bool(state.get("clipped", False)))  # files written before robust scaling: min-max
        scaler._set_bounds(_to_numpy(state["data_min"]), _to_numpy(state["data_max"]))
        return scaler


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
