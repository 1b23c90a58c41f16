"""The designs of a sweep as conditioner inputs: read them, scale them, pair them with latent targets."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from modules.data.design_images import load_images
from modules.data.design_tables import load_parameter_table, table_parameter_names
from modules.data.input_scaler import InputScaler
from modules.config.schema import ConditionerConfig
from modules.errors import DataError


def resolve_param_dir(conditioner: ConditionerConfig, base_dir: Path) -> Path:
    """param_dir as written; the legacy '/params' meant a folder beside the run, so fall back to that."""
    if not conditioner.param_dir:
        raise DataError("param_dir is empty in condition.txt; set it to the CSV file (input_type csvs) or the "
                        "image folder (input_type image) holding one design per case")
    written = Path(conditioner.param_dir)
    candidates = [base_dir / written]
    if written.is_absolute():
        candidates.append(base_dir / str(written).lstrip("/\\"))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(f"param_dir {conditioner.param_dir}: not found (tried {tried}); fix param_dir in condition.txt")


def load_design_array(conditioner: ConditionerConfig, base_dir: Path, num_cases: Optional[int]) -> np.ndarray:
    """[cases, num_params] float64 for csv input, [cases, C, S, S] float32 in [0, 1] for images."""
    path = resolve_param_dir(conditioner, base_dir)
    if conditioner.input_type == "csv":
        return load_parameter_table(path, conditioner.num_params, num_cases)
    return load_images(path, num_cases, conditioner.image_size)


def load_parameter_names(conditioner: ConditionerConfig, base_dir: Path) -> Optional[List[str]]:
    """The parameter table's column names from its header row (None: images, or no header)."""
    if conditioner.input_type != "csv":
        return None
    return table_parameter_names(resolve_param_dir(conditioner, base_dir), conditioner.num_params)


class DesignDataset(Dataset):
    """Item i: (scaled design input, flat latent target, the case's mode coefficients [C, T] or empty)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, case_indices: np.ndarray,
                 coefficients: Optional[torch.Tensor] = None):
        """coefficients [num_cases, C, T] (all cases; indexed here), for end-to-end training."""
        self.inputs = inputs[case_indices]
        self.targets = targets[case_indices]
        self.case_indices = np.asarray(case_indices)
        self.coefficients = None if coefficients is None else coefficients[torch.as_tensor(self.case_indices)]

    def __len__(self) -> int:
        return len(self.case_indices)

    def __getitem__(self, index: int):
        field = self.coefficients[index] if self.coefficients is not None else torch.empty(0)
        return self.inputs[index], self.targets[index], field


def scaled_inputs(designs: np.ndarray, scaler: InputScaler) -> torch.Tensor:
    return torch.as_tensor(np.asarray(scaler.transform(designs)), dtype=torch.float32)
