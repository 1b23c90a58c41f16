"""Training the VAE on spatial-mode coefficients instead of full fields (the default; see models/spatial_basis.py).

Every case is projected once on the VAE's frozen spatial basis: its coefficients a [C, T], the weighted
squared error R that no mode holds, and its squared norm in physical units. With the loss the physically
weighted MSE (Loss_type 1, physical_weighting 1), one case's squared error is s^2 ||a_hat - a||^2 + R, so
training on [C, T] gives the same loss, gradients and epoch-selection metric as on [N, T], at a cost that
does not grow with the mesh (0.84 -> 0.052 s per case at 95,008 nodes x 200 steps, README).
Pure tensor math: vae_stage reads the cases and hands them over a chunk at a time.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from modules.config.schema import TrainConfig
from modules.models.spatial_basis import SpatialBasis
from modules.models.vae import VAEOutput
from modules.training.losses import kl_weight, vae_total


@dataclass
class ProjectedSweep:
    """What training needs of every case once projected (index = case index)."""

    coefficients: torch.Tensor
    """[num_cases, C, T] float32: basis.project of each scaled case (a, in units of the basis scale s)."""
    residual: torch.Tensor
    """[num_cases] float64: R = sum_{n,t} p_n (x_hat - x)^2 of the case's own projection, the part no mode holds."""
    physical_norm_sq: torch.Tensor
    """[num_cases] float64: sum_{n,t} of the case squared, in physical units."""
    scale: float
    """The basis scale s: a coefficient error e costs s^2 e^2 in weighted squared units."""
    physical_per_weighted: float
    """Squared physical error per unit of weighted squared error: factor_n^2 / p_n, the same for every node
    because the node scaler's factor and sqrt(p) are both proportional to the node's physical half-range."""
    num_nodes: int
    """Channels of a scaled case (nodes x variables): the 'N' of the mean over [N, T]."""

    def energy_per_element(self, case_indices: Sequence[int]) -> float:
        """Mean weighted squared value per element of those cases: the unit of the latent alignment term."""
        index = torch.as_tensor(np.asarray(case_indices, dtype=np.int64))
        coefficients = self.coefficients[index].double()
        total = self.scale ** 2 * coefficients.pow(2).sum() + self.residual[index].sum()
        return float(total / (len(index) * self.num_nodes * coefficients.shape[2]))

    def physical_squared_norms(self, case_indices: Sequence[int], reconstructed: torch.Tensor) -> np.ndarray:
        """metrics.squared_norms of those cases from reconstructed coefficients [k, C, T] (basis units): each
        case's squared error s^2 ||a_hat - a||^2 + R and its squared norm, in physical units, without its field.
        Exact (to rounding) when the node weights are the physical ones, as in the training loss."""
        index = torch.as_tensor(np.asarray(case_indices, dtype=np.int64))
        miss = (reconstructed.double() - self.coefficients[index].double()).pow(2).sum(dim=(1, 2))
        weighted = self.scale ** 2 * miss + self.residual[index]
        return torch.stack([weighted * self.physical_per_weighted, self.physical_norm_sq[index]], dim=1).numpy()


def physical_per_weighted(node_weights: torch.Tensor, to_physical: Tuple[torch.Tensor, torch.Tensor]) -> float:
    """factor^2 / p (see ProjectedSweep.physical_per_weighted), from the sums so that nodes of weight 0 count
    for nothing (their factor is 0 too)."""
    factor = to_physical[1].double()
    return float(factor.pow(2).sum() / node_weights.double().sum().clamp_min(1e-300))


@torch.no_grad()
def project_fields(basis: SpatialBasis, fields: torch.Tensor, node_weights: torch.Tensor,
                   to_physical: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled fields [k, N, T] (on the basis' device) -> (a [k, C, T], R [k] float64, physical squared norm [k]
    float64)."""
    device = fields.device
    coefficients = basis.project(fields)
    miss = basis.readout(coefficients).sub_(fields).square_()
    residual = miss.sum(dim=2).double() @ node_weights.to(device).double()
    del miss
    offset, factor = (t.to(device)[None, :, None] for t in to_physical)
    physical = (fields * factor).add_(offset).square_()
    norm_sq = physical.sum(dim=2).double().sum(dim=1)
    return coefficients, residual, norm_sq


class ProjectedCases(Dataset):
    """Item i = (a [C, T] of case `case_indices[i]`, that case index): FieldDataset's layout, projected.

    Holds a view of the coefficients of all cases, so train and validation sets share one tensor."""

    def __init__(self, coefficients: torch.Tensor, case_indices: Sequence[int]):
        self.coefficients = coefficients
        self.case_indices = np.asarray(case_indices, dtype=np.int64)

    @property
    def device(self) -> torch.device:
        return self.coefficients.device

    def __len__(self) -> int:
        return len(self.case_indices)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        case_index = int(self.case_indices[i])
        return self.coefficients[case_index], case_index


def sample_timesteps(batch: int, num_timesteps: int, count: int, device: torch.device) -> Optional[torch.Tensor]:
    """[batch, count] distinct timesteps per case, drawn from the global generator (saved in checkpoints, so
    resume stays exact); None when count covers the whole transient."""
    if count <= 0 or count >= num_timesteps:
        return None
    return torch.rand(batch, num_timesteps).argsort(dim=1)[:, :count].to(device)


class ProjectedVAEObjective:
    """alpha x (recon + design terms) + beta(epoch) x KL of every level, from ProjectedCases batches.

    recon is the node-space weighted MSE itself (s^2 ||a_hat - a||^2 + R per case, over N x T), so the logged
    losses match a full-field run. With designs (the VAE's design prior) the field decoded from the design
    alone is reconstructed too, and the posterior mean is pulled toward the design prior's mean
    (losses.vae_total). Training decodes `timesteps_per_case` random timesteps of each case (all when 0),
    scaled to the whole transient; validation decodes all of them once, at the posterior means."""

    def __init__(self, train: TrainConfig, projection: ProjectedSweep, designs: Optional[torch.Tensor] = None,
                 energy_per_element: float = 1.0):
        self.train = train
        self.projection = projection
        self.designs = designs
        self.energy_per_element = energy_per_element
        self._copies: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = {}

    def set_epochs(self, epochs: int) -> None:
        """The stage runs `epochs` epochs (the time budget cut them): the KL warm-up spans half of those."""
        self.train = dataclasses.replace(self.train, epochs=epochs)

    def _constants(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(R float64, physical squared norm float64, designs) on `device`, copied once."""
        if device not in self._copies:
            designs = None if self.designs is None else self.designs.to(device)
            self._copies[device] = (self.projection.residual.to(device), self.projection.physical_norm_sq.to(device),
                                    designs)
        return self._copies[device]

    def squared_errors(self, recon: torch.Tensor, target: torch.Tensor, case_index: torch.Tensor,
                       num_timesteps: int) -> torch.Tensor:
        """[B] float64 sum_{n,t} p_n (x_hat - x)^2 of each case, from coefficients [B, C, n] of n of its
        num_timesteps timesteps (the sum over the n scaled to all of them)."""
        residual = self._constants(target.device)[0]
        # In the coefficients' precision, as F.mse_loss runs in float32 under autocast: in bf16 the small
        # differences between reconstruction and target would keep ~3 digits.
        with torch.autocast(device_type=target.device.type, enabled=False):
            squared = (recon.to(target.dtype) - target).square().sum(dim=(1, 2)).double()
        squared = squared * (self.projection.scale ** 2 * num_timesteps / target.shape[2])
        return squared + residual[case_index]

    def _mean_squared(self, recon: torch.Tensor, target: torch.Tensor, case_index: torch.Tensor,
                      num_timesteps: int) -> torch.Tensor:
        """The weighted MSE over [B, N, T] (losses.reconstruction_loss with Loss_type 1), in the target's dtype."""
        elements = target.shape[0] * self.projection.num_nodes * num_timesteps
        return (self.squared_errors(recon, target, case_index, num_timesteps).sum() / elements).to(target.dtype)

    def _total(self, output: VAEOutput, target: torch.Tensor, case_index: torch.Tensor, num_timesteps: int,
               beta: float) -> Tuple[torch.Tensor, Dict[str, float]]:
        """losses.vae_total of one decode against `target` (the decoded timesteps of the cases)."""
        recon = self._mean_squared(output.recon, target, case_index, num_timesteps)
        design_recon = (None if output.design_recon is None
                        else self._mean_squared(output.design_recon, target, case_index, num_timesteps))
        return vae_total(self.train, beta, recon, output, design_recon, self.energy_per_element)

    def __call__(self, model: torch.nn.Module, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        coefficients, case_index = batch[0], batch[1]
        num_timesteps = coefficients.shape[2]
        beta = kl_weight(epoch, self.train)
        designs = self._constants(coefficients.device)[2]
        design = None if designs is None else designs[case_index]
        if not model.training:
            return self._validation(model, coefficients, case_index, design, beta)
        totals, metrics_per_sample = [], []
        for _ in range(self.train.recon_iterations):
            timesteps = sample_timesteps(coefficients.shape[0], num_timesteps, self.train.timesteps_per_case,
                                         coefficients.device)
            target = coefficients if timesteps is None else coefficients.gather(
                2, timesteps[:, None, :].expand(-1, coefficients.shape[1], -1))
            output = model(coefficients, projected=True, design=design, timesteps=timesteps)
            total, metrics = self._total(output, target, case_index, num_timesteps, beta)
            totals.append(total)
            metrics_per_sample.append(metrics)
        metrics = {name: float(np.mean([m[name] for m in metrics_per_sample])) for name in metrics_per_sample[0]}
        metrics["beta"] = beta
        return torch.stack(totals).mean(), metrics

    def _validation(self, model: torch.nn.Module, coefficients: torch.Tensor, case_index: torch.Tensor,
                    design: Optional[torch.Tensor], beta: float) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The loss and the relative errors from one decode of every timestep at the posterior means: one
        forward instead of a sampled one beside it (with 80 timesteps per case, validation decoded more
        timesteps than a training epoch); the logged validation loss is so deterministic."""
        output = model(coefficients, use_mean=True, projected=True, design=design)
        total, metrics = self._total(output, coefficients, case_index, coefficients.shape[2], beta)
        metrics["beta"] = beta
        metrics.update(self.relative_errors(output, coefficients, case_index))
        return total, metrics

    def relative_errors(self, output: VAEOutput, coefficients: torch.Tensor, case_index: torch.Tensor
                        ) -> Dict[str, float]:
        """Mean over the batch of ||x - x_hat|| / ||x|| in physical units of the model's `output` at the
        posterior means ('reconstruction'; and from the design prior alone, 'design'), without the full fields:
        ||physical error||^2 = (factor^2 / p) x weighted error. 'selection' (what picks the kept epoch) is their
        mean."""
        norm = self._constants(coefficients.device)[1][case_index].sqrt().clamp_min(1e-30)

        def relative(recon: torch.Tensor) -> float:
            squared = self.squared_errors(recon, coefficients, case_index, coefficients.shape[2]).clamp_min(0.0)
            return ((self.projection.physical_per_weighted * squared).sqrt() / norm).mean().item()

        errors = {"reconstruction": relative(output.recon)}
        if output.design_recon is not None:
            errors["design"] = relative(output.design_recon)
        errors["selection"] = float(np.mean(list(errors.values())))
        return errors
