"""The linear path of the VAE: case-level PCA of the training cases' mode coefficients, in the latent code.

With `case_pca_path 1` the latent code is laid out so that, at the start of training, the VAE *is* PCA with as
many components as latent numbers: the encoder adds the case's whitened PCA scores to its (zero at the start)
output, and the decoder adds the linear PCA readout of the code to its (zero at the start) per-timestep MLP.
Why: on smooth sweeps (the demo's heat conduction) the nonlinear decoder alone fitted the training cases twice as
well as PCA but reconstructed designs at the edge of the design space 2-3x worse (19 % against 7 %); a linear path
extrapolates as PCA does. Both linear maps stay frozen at the PCA (the nonlinear parts learn what it misses): left
trainable they drifted, and the demo's held-out reconstruction went from 0.0486 (frozen) to 0.0526, worse than
PCA's 0.0509.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

CASE_PCA_AUTO_UNEXPLAINED = 0.05
"""case_pca_path auto: on when the PCA leaves under this share of the validation cases' variance (about their
training mean, in the VAE's coefficients) unexplained. Measured with 28 components: the demo (heat) 1.3 %, where
the PCA start cut the held-out reconstruction error from 0.088 to 0.058; the wave sweep 13.5 % and the advection
sweep 28 %, where the VAE started at PCA stayed there (wave: 0.333 against 0.269 without the path)."""


@dataclass(frozen=True)
class CasePCA:
    """PCA of flattened training coefficients [n, C*T]: x ~ mean + sum_k score_k * spread_k * direction_k, with
    scores of unit mean square over the training cases (the VAE's prior scale)."""

    mean: torch.Tensor
    """[C*T] float64"""
    directions: torch.Tensor
    """[k, C*T] float64, orthonormal rows, strongest first (k <= the number of latent numbers)"""
    spread: torch.Tensor
    """[k] float64: RMS of each component's score over the training cases."""

    @classmethod
    def fit(cls, coefficients: torch.Tensor, components: int) -> "CasePCA":
        """coefficients [n, C, T] of the training cases; at most `components` (and the data's rank) kept."""
        flat = coefficients.double().flatten(1)
        mean = flat.mean(dim=0)
        _, singular, right = torch.linalg.svd(flat - mean, full_matrices=False)
        spread = singular / len(flat) ** 0.5
        kept = int(min(components, (spread > 1e-9 * spread[0].clamp_min(1e-300)).sum()))
        # Copies, not views: a view keeps all n rows of `right` alive, and torch.save writes a view's whole
        # storage (the blend's 56 directions saved 159 MB instead of 23 at the seed's size).
        return cls(mean, right[:kept].clone(), spread[:kept].clone())

    def unexplained(self, coefficients: torch.Tensor) -> float:
        """Share of the variance of cases [n, C, T] about the training mean that the kept components miss."""
        centred = coefficients.double().flatten(1) - self.mean
        missed = centred - (centred @ self.directions.T) @ self.directions
        return float(missed.pow(2).sum() / centred.pow(2).sum().clamp_min(1e-300))

    @property
    def count(self) -> int:
        return len(self.spread)

    def scores(self, coefficients: torch.Tensor) -> torch.Tensor:
        """[n, C, T] -> whitened scores [n, k]."""
        centred = coefficients.double().flatten(1) - self.mean
        return centred @ self.directions.T / self.spread

    def load_into(self, projection: torch.nn.Linear, readout: torch.nn.Linear) -> None:
        """projection: Linear(C*T -> L) giving the scores in its first k outputs (the rest 0); readout:
        Linear(L -> C*T) giving mean + the PCA field of the code's first k numbers (the rest ignored)."""
        k = self.count
        with torch.no_grad():
            for layer in (projection, readout):
                layer.weight.zero_()
                layer.bias.zero_()
            projection.weight[:k] = (self.directions / self.spread[:, None]).to(projection.weight.dtype)
            projection.bias[:k] = (-(self.directions @ self.mean) / self.spread).to(projection.bias.dtype)
            readout.weight[:, :k] = (self.directions.T * self.spread[None, :]).to(readout.weight.dtype)
            readout.bias.copy_(self.mean.to(readout.bias.dtype))


def use_case_pca(setting: str, train: torch.Tensor, validation: torch.Tensor,
                 components: int) -> Tuple[Optional[CasePCA], str]:
    """case_pca_path ('auto', '1' or '0') resolved for training coefficients [k, C, T] and validation [m, C, T]:
    (the training cases' PCA to start the VAE at, or None for no path; the reason in words for the log)."""
    if setting == "0":
        return None, "case_pca_path 0"
    if setting == "1":
        return CasePCA.fit(train, components), "case_pca_path 1"
    if len(validation) == 0 or len(train) < 2:
        return None, "case_pca_path auto: no validation cases to decide on, so no PCA start"
    pca = CasePCA.fit(train, components)
    share = pca.unexplained(validation)
    on = share < CASE_PCA_AUTO_UNEXPLAINED
    return pca if on else None, (
        f"case_pca_path auto: PCA with {components} components leaves {share:.1%} of the validation cases' variance "
        f"unexplained, {'under' if on else 'not under'} {CASE_PCA_AUTO_UNEXPLAINED:.0%}")
