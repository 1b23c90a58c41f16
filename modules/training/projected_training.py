"""Training the VAE on POD coefficients instead of full fields (pod_projected_training 1).

With the linear path, the encoder's first layer h = E x (input_projection, N nodes -> C channels) and the
decoder's last x_hat = O h (output[0], C -> N) are frozen POD layers (VAE.initialise_linear_path):
E = (U w / cs)^T and O = U cs / w, with U [N, C] orthonormal, w the unit-RMS node weights, cs [C] the
channel scales. With the MSE weighted by p = w^2 (physical_weighting), one case's squared error is

    sum_{n,t} p_n (O h - x)^2 = sum_t (h - h0)^T G (h - h0) + R,     G = O^T diag(p) O  [C x C],

where h0 = E x is the case's projection and R = sum_{n,t} p_n (O h0 - x)^2 the part the modes miss: the
cross term 2 (h - h0)^T (G h0 - O^T diag(p) x) is zero because O^T diag(p) O E = O^T diag(p). Every case is
projected once (h0, R and its physical norm), and the VAE then trains on [C, T] instead of [N, T] with the
same loss value, the same gradients and the same epoch-selection metric, at a cost independent of N.
Pure tensor math: vae_stage reads the cases and hands them over a chunk at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from modules.config.schema import TrainConfig
from modules.training.losses import LossTerms, kl_weight
from modules.training.objectives import VAEObjective
from modules.models.vae import HierarchicalVAE, VAEOutput


@dataclass
class ProjectedSweep:
    """What training needs of every case once the frozen POD layers are applied (index = case index)."""

    coefficients: torch.Tensor
    """[num_cases, C, T] in the model's dtype (float32): encoder.input_projection of each scaled case (h0)."""
    residual: torch.Tensor
    """[num_cases] float64: R = sum_{n,t} p_n (O h0 - x)^2, the weighted squared error the POD modes miss."""
    physical_norm_sq: torch.Tensor
    """[num_cases] float64: sum_{n,t} of the case squared, in physical units."""
    channel_gram: torch.Tensor
    """[C, C] float64: G = O^T diag(p) O, the node-space weighted metric seen from the channels."""
    physical_per_weighted: float
    """Squared physical error per unit of weighted squared error: factor_n^2 / p_n, the same for every node
    because the node scaler's factor and sqrt(p) are both proportional to the node's physical half-range."""
    num_nodes: int


def channel_gram(model: HierarchicalVAE, node_weights: torch.Tensor) -> torch.Tensor:
    """[C, C] float64 G = O^T diag(p) O of the decoder's output layer O [N, C] and node weights p [N]."""
    output = model.decoder.output[0].weight.detach()[:, :, 0].double().cpu()
    return output.T @ (output * node_weights.double().cpu()[:, None])


def physical_per_weighted(node_weights: torch.Tensor, to_physical: Tuple[torch.Tensor, torch.Tensor]) -> float:
    """factor^2 / p (see ProjectedSweep.physical_per_weighted), from the sums so that nodes of weight 0 count
    for nothing (their factor is 0 too)."""
    factor = to_physical[1].double()
    return float(factor.pow(2).sum() / node_weights.double().sum().clamp_min(1e-300))


@torch.no_grad()
def project_fields(model: HierarchicalVAE, fields: torch.Tensor, node_weights: torch.Tensor,
                   to_physical: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled fields [k, N, T] (on the model's device) -> (h0 [k, C, T], R [k] float64, physical squared
    norm [k] float64), with the model's own frozen first and last layers."""
    device = fields.device
    coefficients = model.encoder.input_projection(fields)
    miss = model.decoder.output(coefficients).sub_(fields).square_()
    residual = miss.sum(dim=2).double() @ node_weights.to(device).double()
    del miss
    offset, factor = (t.to(device)[None, :, None] for t in to_physical)
    physical = (fields * factor).add_(offset).square_()
    norm_sq = physical.sum(dim=2).double().sum(dim=1)
    return coefficients, residual, norm_sq


class ProjectedCases(Dataset):
    """Item i = (h0 [C, T] of case `case_indices[i]`, that case index): FieldDataset's layout, projected.

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


class ProjectedVAEObjective(VAEObjective):
    """VAEObjective's loss, metrics and selection computed from ProjectedCases batches.

    alpha x recon + beta(epoch) x KL of every level, averaged over Recon_iter samples, where recon is the
    node-space weighted MSE itself (quadratic form in the channels + the case's constant R): the logged
    losses match a full-field run, and the constant adds no gradient. Augmentation and physics terms need
    the full fields, so the config rules out both (RunConfig._pod_projection_problems)."""

    def __init__(self, train: TrainConfig, projection: ProjectedSweep):
        super().__init__(train)
        self.projection = projection
        self._copies: Dict[Tuple[torch.device, torch.dtype], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(G in `dtype`, R float64, physical squared norm float64) on `device`, copied once."""
        if (device, dtype) not in self._copies:
            projection = self.projection
            self._copies[device, dtype] = (projection.channel_gram.to(device, dtype), projection.residual.to(device),
                                           projection.physical_norm_sq.to(device))
        return self._copies[device, dtype]

    def squared_errors(self, recon: torch.Tensor, coefficients: torch.Tensor,
                       case_index: torch.Tensor) -> torch.Tensor:
        """[B] float64 sum_{n,t} p_n (x_hat - x)^2 of each case, from recon = the decoder's output-layer
        input [B, C, T] and the cases' h0 [B, C, T]."""
        gram, residual, _ = self._constants(coefficients.device, coefficients.dtype)
        # In h0's precision, as F.mse_loss runs in float32 under autocast: in bf16 the small differences
        # between reconstruction and h0 would keep ~3 digits.
        with torch.autocast(device_type=coefficients.device.type, enabled=False):
            difference = recon.to(coefficients.dtype) - coefficients
            quadratic = (difference * torch.einsum("cd,bdt->bct", gram, difference)).sum(dim=(1, 2))
        return quadratic.double() + residual[case_index]

    def reconstruction_loss(self, output: VAEOutput, coefficients: torch.Tensor,
                            case_index: torch.Tensor) -> torch.Tensor:
        """The weighted MSE over [B, N, T] (losses.reconstruction_loss with Loss_type 1), a scalar in h0's dtype."""
        num_elements = coefficients.shape[0] * self.projection.num_nodes * coefficients.shape[2]
        squared = self.squared_errors(output.recon, coefficients, case_index).sum()
        return (squared / num_elements).to(coefficients.dtype)

    def __call__(self, model: torch.nn.Module, batch, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        coefficients, case_index = batch[0], batch[1]
        beta = kl_weight(epoch, self.train)
        terms = []
        for _ in range(self.train.recon_iterations):
            output = model(coefficients, projected=True)
            recon = self.reconstruction_loss(output, coefficients, case_index)
            level_means = [level.mean() for level in output.kl_per_level]
            kl = torch.stack(level_means).sum()
            terms.append(LossTerms(total=self.train.recon_weight * recon + beta * kl, recon=recon, kl=kl,
                                   kl_per_level=[level.detach() for level in level_means]))
        total = torch.stack([t.total for t in terms]).mean()
        recon = torch.stack([t.recon.detach() for t in terms]).mean()
        kl = torch.stack([t.kl.detach() for t in terms]).mean()
        metrics = {"loss": total.item(), "recon": recon.item(), "kl": kl.item(), "beta": beta}
        if not model.training:
            metrics["selection"] = self.relative_error(model, coefficients, case_index)
        return total, metrics

    def relative_error(self, model: torch.nn.Module, coefficients: torch.Tensor, case_index: torch.Tensor) -> float:
        """VAEObjective._relative_error (mean over the batch of ||x - x_hat|| / ||x|| in physical units, with
        posterior means) without the full fields: ||physical error||^2 = (factor^2 / p) x weighted error."""
        recon = model(coefficients, use_mean=True, projected=True).recon
        squared = self.squared_errors(recon, coefficients, case_index).clamp_min(0.0)
        norm_sq = self._constants(coefficients.device, coefficients.dtype)[2][case_index]
        errors = (self.projection.physical_per_weighted * squared).sqrt() / norm_sq.sqrt().clamp_min(1e-30)
        return errors.mean().item()
