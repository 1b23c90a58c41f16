"""How far a design lies from the training designs, as a Gaussian process sees it: the width factor of the
`predict --samples` band.

The band's draws have one spread per latent number, measured on the validation designs, so every design got
about the same relative band. A design at the edge of the design space is predicted worse than one among the
training designs, and the split-conformal width, calibrated on validation designs, then covered too little of
the test designs that lay further out (the demo: 81.9 % for a nominal 90 %). A Gaussian process knows that
distance: its posterior standard deviation grows away from the training designs. So each design's band is
scaled by sigma(x) / (its mean over the validation designs): one process, fitted to the leading case-PCA score
of the training cases (the direction the fields vary most), kernel ConstantKernel * RBF(ARD) + WhiteKernel on
standardised inputs as the POD + GP baseline's.

The factor only widens (MIN_FACTOR = 1): designs nearer the training designs than the validation designs keep
the validation designs' band. Measured on the test designs of the three sweeps (coverage for a nominal 90 %,
mean half-width against the constant band's): constant 81.9 % / 90.4 % / 90.0 % (demo / front-dev /
impact-dev); the factor both ways (floor 0.25) 89.1 % / 90.5 % / 84.5 % at 1.96x / 1.54x / 0.93x the width: on
the wave sweep designs near the training designs were not predicted better than the process expected; widening
only 87.5 % / 91.4 % / 89.2 % at 1.42x / 1.15x / 0.95x (README, ablations).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from modules.models.case_pca import CasePCA
from modules.models.design_gp import fit_gaussian_processes

MIN_FACTOR = 1.0
"""The narrowest band, as a share of the validation designs' mean width (see above)."""
SPREAD_STATE_KEYS = ("input_mean", "input_scale", "train_inputs", "length_scales", "amplitude", "noise",
                     "cholesky", "reference")


class DesignSpread(torch.nn.Module):
    """Design inputs [B, p] -> width factors [B]: the Gaussian process's posterior std (noise included) over its
    mean on the reference (validation) designs."""

    def __init__(self, input_mean: torch.Tensor, input_scale: torch.Tensor, train_inputs: torch.Tensor,
                 length_scales: torch.Tensor, amplitude: torch.Tensor, noise: torch.Tensor, cholesky: torch.Tensor,
                 reference: torch.Tensor):
        super().__init__()
        values = (input_mean, input_scale, train_inputs, length_scales, amplitude, noise, cholesky, reference)
        for name, value in zip(SPREAD_STATE_KEYS, values):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64).clone())
        cases, features = self.train_inputs.shape
        if (self.cholesky.shape != (cases, cases) or self.length_scales.shape != (features,)
                or self.input_mean.shape != (features,) or self.input_scale.shape != (features,)):
            raise ValueError(f"inconsistent design-spread tensors: train inputs {tuple(self.train_inputs.shape)}, "
                             f"cholesky {tuple(self.cholesky.shape)}, length scales {tuple(self.length_scales.shape)}")
        if not float(self.reference) > 0:
            raise ValueError(f"the design spread's reference must be positive, got {float(self.reference)}")

    @classmethod
    def from_sklearn(cls, scaler, process, reference_inputs: np.ndarray) -> "DesignSpread":
        """From a fitted StandardScaler and one GaussianProcessRegressor (kernel ConstantKernel * RBF +
        WhiteKernel) on the scaled training inputs; the reference is its mean posterior std on the raw
        `reference_inputs` [v, p] (all training inputs when there are none)."""
        kernel = process.kernel_
        features = len(scaler.mean_)
        spread = cls(scaler.mean_, scaler.scale_, process.X_train_,
                     np.broadcast_to(kernel.k1.k2.length_scale, (features,)).copy(), kernel.k1.k1.constant_value,
                     kernel.k2.noise_level, process.L_, 1.0)
        reference = reference_inputs if len(reference_inputs) else scaler.inverse_transform(process.X_train_)
        with torch.no_grad():
            spread.reference.fill_(float(spread.posterior_std(torch.as_tensor(reference)).mean()))
        return spread

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor]) -> "DesignSpread":
        return cls(*(state[name] for name in SPREAD_STATE_KEYS))

    def posterior_std(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, p] raw design inputs -> [B] posterior std in the process's normalised target units."""
        x = (inputs.to(self.input_mean.device, torch.float64) - self.input_mean) / self.input_scale
        squared = torch.cdist(x / self.length_scales, self.train_inputs / self.length_scales,
                              compute_mode="donot_use_mm_for_euclid_dist") ** 2
        cross = self.amplitude * torch.exp(-0.5 * squared)                                      # [B, k]
        solved = torch.linalg.solve_triangular(self.cholesky, cross.T, upper=False)            # [k, B]
        variance = self.amplitude + self.noise - solved.pow(2).sum(dim=0)
        return variance.clamp_min(0.0).sqrt()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return (self.posterior_std(inputs) / self.reference).clamp_min(MIN_FACTOR).float()


def fit_design_spread(inputs: torch.Tensor, coefficients: torch.Tensor, train: np.ndarray,
                      reference: np.ndarray) -> DesignSpread:
    """inputs: the conditioner's design inputs [cases, p]; coefficients: every case's mode coefficients
    [cases, C, T]; the process is fitted on the `train` cases' leading case-PCA score and normalised on the
    `reference` cases (the validation designs)."""
    leading = CasePCA.fit(coefficients[train], 1).scores(coefficients[train]).numpy()
    train_inputs = inputs[train].double().numpy()
    scaler = StandardScaler().fit(train_inputs)
    (process,), _ = fit_gaussian_processes(scaler.transform(train_inputs), leading,
                                           "predict --samples: design spread of the band", n_restarts_optimizer=0)
    return DesignSpread.from_sklearn(scaler, process, inputs[reference].double().numpy())
