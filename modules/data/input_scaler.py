"""Standardising design inputs (parameter tables and images) with statistics of the training cases only."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from modules.data.design_files import design_error
from modules.errors import CheckpointError

ArrayLike = Union[np.ndarray, torch.Tensor]


class InputScaler:
    """Standardise design inputs with statistics of the training cases only.

    Parameter tables [cases, num_params] get a mean and std per column; images
    [cases, C, H, W] get one per channel. A constant column or channel keeps
    std 1 so it is only shifted, never blown up. Table columns in `log_columns`
    (data/log_spacing.py) are standardised as their natural logarithm.
    """

    KINDS = ("table", "image")

    def __init__(self) -> None:
        self.kind: Optional[str] = None
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None
        self.log_columns: Tuple[int, ...] = ()

    @property
    def is_fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x: ArrayLike, train_indices: Sequence[int], log_columns: Sequence[int] = ()) -> "InputScaler":
        values = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if values.ndim not in (2, 4):
            raise ValueError(f"expected [cases, num_params] or [cases, C, H, W], got shape {values.shape}")
        if log_columns and values.ndim != 2:
            raise ValueError("log_columns apply to parameter tables only, not images")
        self.log_columns = tuple(sorted(int(column) for column in log_columns))
        values = self._logged(values)
        indices = np.asarray(train_indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("train_indices is empty: the scaler needs at least one training case")
        if indices.min() < -values.shape[0] or indices.max() >= values.shape[0]:
            raise ValueError(f"train_indices must lie in 0..{values.shape[0] - 1}, "
                             f"got {indices.min()}..{indices.max()}")
        train = values[indices].astype(np.float64)
        axes = (0,) if values.ndim == 2 else (0, 2, 3)
        mean = train.mean(axis=axes)
        std = train.std(axis=axes)
        # Rounding leaves a constant column with std ~1e-17, not 0; dividing by it would amplify noise.
        std = np.where(std <= 1e-10 * np.maximum(np.abs(mean), 1.0), 1.0, std)
        self.kind = "table" if values.ndim == 2 else "image"
        self.mean = torch.from_numpy(mean)
        self.std = torch.from_numpy(std)
        return self

    def _shape_for(self, x: ArrayLike) -> Tuple[int, ...]:
        if not self.is_fitted:
            raise RuntimeError("InputScaler is not fitted: call fit() or from_state_dict() first")
        features = self.mean.shape[0]
        if self.kind == "table":
            if x.shape[-1] != features:
                raise design_error(f"design input has {x.shape[-1]} parameters, the scaler was fitted on {features}",
                             f"give {features} parameters per design, as in training (num_param)")
            return (features,)
        channel_axis = 1 if x.ndim == 4 else 0
        if x.ndim not in (3, 4) or x.shape[channel_axis] != features:
            raise design_error(f"design image batch has shape {tuple(x.shape)}, the scaler was fitted on "
                         f"{features}-channel images",
                         f"load the images with {features} channel(s), as in training")
        return (features, 1, 1)

    def _logged(self, x: ArrayLike) -> ArrayLike:
        """Table designs [..., p] with their log_columns replaced by the natural logarithm; a value there that is
        not positive has none: a DataError naming the design and the parameter."""
        if not self.log_columns:
            return x
        columns = list(self.log_columns)
        chosen = x[..., columns]
        values = chosen.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(chosen)
        bad = np.argwhere(~(values > 0)).reshape(-1, values.ndim)
        if len(bad):
            design, column = (int(bad[0][0]) if values.ndim == 2 else 0), int(bad[0][-1])
            raise design_error(f"design {design + 1}: parameter {columns[column] + 1} is {values[tuple(bad[0])]:g}, "
                               f"but the model reads that parameter as its logarithm (log_parameters), which only "
                               f"a positive value has", "give that parameter a positive value, as in training")
        if isinstance(x, torch.Tensor):
            logged = x.clone()
            logged[..., columns] = torch.log(chosen)
        else:
            logged = np.array(x, dtype=np.float64)
            logged[..., columns] = np.log(values)
        return logged

    def _apply(self, x: ArrayLike, inverse: bool) -> ArrayLike:
        shape = self._shape_for(x)
        if isinstance(x, torch.Tensor):
            mean = self.mean.reshape(shape).to(device=x.device, dtype=x.dtype)
            std = self.std.reshape(shape).to(device=x.device, dtype=x.dtype)
        else:
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
            mean = self.mean.numpy().reshape(shape).astype(dtype)
            std = self.std.numpy().reshape(shape).astype(dtype)
        return x * std + mean if inverse else (x - mean) / std

    def transform(self, x: ArrayLike) -> ArrayLike:
        """(x - mean) / std, of log x in log_columns; numpy in -> numpy out, tensor in -> tensor out (same device;
        the same dtype, float64 for a numpy table with log_columns)."""
        return self._apply(self._logged(x) if self.kind == "table" else x, inverse=False)

    def inverse(self, x: ArrayLike) -> ArrayLike:
        """Undo `transform`."""
        restored = self._apply(x, inverse=True)
        if self.kind != "table" or not self.log_columns:
            return restored
        columns = list(self.log_columns)
        restored[..., columns] = (torch.exp(restored[..., columns]) if isinstance(restored, torch.Tensor)
                                  else np.exp(restored[..., columns]))
        return restored

    def state_dict(self) -> Dict[str, Union[str, torch.Tensor]]:
        if not self.is_fitted:
            raise RuntimeError("InputScaler is not fitted: nothing to save")
        return {"kind": self.kind, "mean": self.mean.clone(), "std": self.std.clone(),
                "log_columns": torch.as_tensor(self.log_columns, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Union[str, torch.Tensor]]) -> "InputScaler":
        """Rebuild a fitted scaler; a malformed state (a damaged checkpoint) raises CheckpointError."""
        problems = []
        if not isinstance(state, dict):
            problems.append(f"expected a dict, got {type(state).__name__}")
        else:
            if state.get("kind") not in cls.KINDS:
                problems.append(f"'kind' must be one of {', '.join(cls.KINDS)}, got {state.get('kind')!r}")
            mean, std = state.get("mean"), state.get("std")
            if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
                    and mean.ndim == 1 and mean.shape == std.shape):
                problems.append("'mean' and 'std' must be 1-D tensors of equal length")
            elif not bool(torch.all(std > 0)):
                problems.append("'std' must be positive")
            # Bundles written before log_parameters existed have no log_columns: every column linear.
            logs = state.get("log_columns", torch.zeros(0, dtype=torch.int64))
            if not (isinstance(logs, torch.Tensor) and logs.ndim == 1 and not logs.is_floating_point()
                    and (state.get("kind") == "table" or len(logs) == 0)
                    and (len(logs) == 0 or (isinstance(mean, torch.Tensor) and 0 <= int(logs.min())
                                            and int(logs.max()) < len(mean)))):
                problems.append("'log_columns' must be a 1-D integer tensor of a table's column numbers")
        if problems:
            raise CheckpointError("input scaler state in the checkpoint is damaged: " + "; ".join(problems)
                                  + "\n    fix: retrain the conditioner to write a fresh checkpoint")
        scaler = cls()
        scaler.kind = state["kind"]
        scaler.mean = state["mean"].detach().to(torch.float64).cpu().clone()
        scaler.std = state["std"].detach().to(torch.float64).cpu().clone()
        scaler.log_columns = tuple(int(column) for column in state.get("log_columns", torch.zeros(0)).tolist())
        return scaler
