"""Gaussian processes from design inputs to numbers describing the field (POD scores): fitted with scikit-learn,
evaluated in torch.

One process per target, each with its own ARD kernel ConstantKernel * RBF(length scale per feature) +
WhiteKernel on standardised inputs: the standard POD-GPR. (A single process shared by all modes was measured
first: its hyperparameters, fitted to all 56 modes of the demo at once, follow the many small noisy modes, and
its held-out error was 15.0 % against 4.9 % per mode.) The report's POD + GP baseline and the prediction's
POD + GP blend (models/pod_gp_blend.py) both fit them here.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

from modules.runtime import progress


def fit_gaussian_processes(scaled_inputs: np.ndarray, targets: np.ndarray, label: str, random_state: int = 0,
                           n_restarts_optimizer: int = 1, optimised_targets: Optional[int] = None
                           ) -> Tuple[List[GaussianProcessRegressor], List[str]]:
    """One fitted process per column of targets [k, m] on standardised inputs [k, p]; and the optimiser's
    warnings (e.g. a length scale at its bound), kept for the caller instead of printed or dropped.

    optimised_targets: only the first that many columns (the strongest scores) get their own kernel
    hyperparameters by maximum likelihood; each later column reuses the last optimised kernel as it is (a
    solve, no optimisation). None: every column is optimised (the textbook POD-GPR)."""
    processes: List[GaussianProcessRegressor] = []
    optimised = targets.shape[1] if optimised_targets is None else max(1, optimised_targets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Minutes at several hundred designs (the seed's 388): a bar counts the processes.
        for target in progress.each(range(targets.shape[1]), label, unit="mode"):
            if target < optimised:
                kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                          * RBF(length_scale=np.ones(scaled_inputs.shape[1]), length_scale_bounds=(1e-2, 1e3))
                          + WhiteKernel(noise_level=1e-5, noise_level_bounds=(1e-10, 1e0)))
                process = GaussianProcessRegressor(kernel=kernel, normalize_y=True,
                                                   n_restarts_optimizer=n_restarts_optimizer,
                                                   random_state=random_state)
            else:
                process = GaussianProcessRegressor(kernel=processes[optimised - 1].kernel_, normalize_y=True,
                                                   optimizer=None)
            processes.append(process.fit(scaled_inputs, targets[:, target]))
    return processes, [str(warning.message) for warning in caught]


GP_STATE_KEYS = ("input_mean", "input_scale", "train_inputs", "alpha", "amplitude", "length_scales", "target_mean",
                 "target_scale")


class DesignGaussianProcess(torch.nn.Module):
    """Design inputs [B, p] -> the posterior means of m fitted Gaussian processes [B, m].

    Each process has the kernel amplitude x exp(-|(x - x')/l|^2 / 2) (+ white noise, which does not enter the
    mean at new designs) on standardised inputs, and normalised targets: sklearn's GaussianProcessRegressor
    with ConstantKernel * RBF(ARD) + WhiteKernel and normalize_y=True, the report's POD + GP baseline."""

    def __init__(self, input_mean: torch.Tensor, input_scale: torch.Tensor, train_inputs: torch.Tensor,
                 alpha: torch.Tensor, amplitude: torch.Tensor, length_scales: torch.Tensor,
                 target_mean: torch.Tensor, target_scale: torch.Tensor):
        super().__init__()
        values = (input_mean, input_scale, train_inputs, alpha, amplitude, length_scales, target_mean, target_scale)
        for name, value in zip(GP_STATE_KEYS, values):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64).clone())
        processes, features = self.length_scales.shape
        if self.alpha.shape != (len(self.train_inputs), processes) or self.train_inputs.shape[1] != features:
            raise ValueError(f"inconsistent Gaussian process tensors: alpha {tuple(self.alpha.shape)}, train inputs "
                             f"{tuple(self.train_inputs.shape)}, length scales {tuple(self.length_scales.shape)}")

    @property
    def processes(self) -> int:
        return len(self.length_scales)

    @classmethod
    def from_sklearn(cls, scaler, processes: Sequence) -> "DesignGaussianProcess":
        """From a fitted StandardScaler and GaussianProcessRegressors (kernel ConstantKernel * RBF + WhiteKernel,
        normalize_y=True) that share their standardised training inputs."""
        features = len(scaler.mean_)
        kernels = [process.kernel_.k1 for process in processes]
        return cls(scaler.mean_, scaler.scale_, processes[0].X_train_,
                   np.stack([process.alpha_.reshape(-1) for process in processes], axis=1),
                   np.array([kernel.k1.constant_value for kernel in kernels]),
                   np.stack([np.broadcast_to(kernel.k2.length_scale, (features,)) for kernel in kernels]),
                   np.array([float(np.ravel(process._y_train_mean)[0]) for process in processes]),
                   np.array([float(np.ravel(process._y_train_std)[0]) for process in processes]))

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor]) -> "DesignGaussianProcess":
        return cls(*(state[name] for name in GP_STATE_KEYS))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = (inputs.to(self.input_mean.device, torch.float64) - self.input_mean) / self.input_scale
        scaled_queries = x[None] / self.length_scales[:, None, :]                      # [m, B, p]
        scaled_train = self.train_inputs[None] / self.length_scales[:, None, :]        # [m, k, p]
        squared = torch.cdist(scaled_queries, scaled_train, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        kernel = self.amplitude[:, None, None] * torch.exp(-0.5 * squared)             # [m, B, k]
        means = torch.einsum("mbk,km->bm", kernel, self.alpha)
        return (means * self.target_scale + self.target_mean).float()
