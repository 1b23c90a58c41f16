"""Encoding by amortised inference plus a few gradient steps (a semi-amortised VAE, Kim et al. 2018).

The encoder is trained on a few hundred cases and its guess for an unseen field is rough (on the wave sweep
its held-out reconstruction error was 0.40 against 0.24 after refinement, README ablations); the decoder
generalises better. So the guess is refined by minimising the field's own reconstruction error over the
latent code, with the decoder frozen. Each case keeps the best code it reached, so refinement never makes
a reconstruction worse than the encoder's.
"""
from __future__ import annotations

from typing import Optional

import torch

from modules.models.vae import HierarchicalVAE

REFINE_LEARNING_RATE = 1e-2
"""Adam step on latent codes of unit prior scale."""
REFINE_TIMESTEPS = 40
"""Longer transients are refined on this many evenly spread timesteps (all are decoded afterwards): each step
decodes and differentiates through every refined timestep, so at the seed's 200 timesteps refining all of
them made the report's reconstruction of 484 cases an estimated 2.7 hours on 2 cores; at 40 or fewer
timesteps (the demo, the development sweeps) nothing changes."""


def refined_timesteps(num_timesteps: int, batch: int, device: torch.device) -> Optional[torch.Tensor]:
    """[batch, REFINE_TIMESTEPS] evenly spread timesteps (first and last included), or None for all."""
    if num_timesteps <= REFINE_TIMESTEPS:
        return None
    chosen = torch.linspace(0, num_timesteps - 1, REFINE_TIMESTEPS, device=device).round().long()
    return chosen[None, :].expand(batch, -1)


def refine_latents(vae: HierarchicalVAE, coefficients: torch.Tensor, initial: torch.Tensor, steps: int) -> torch.Tensor:
    """coefficients [k, C, T] (basis.project of the fields), initial flat codes [k, F] -> refined codes [k, F]."""
    best = initial.detach().clone()
    if steps <= 0 or len(best) == 0:
        return best
    timesteps = refined_timesteps(coefficients.shape[2], len(best), coefficients.device)
    target = coefficients.detach() if timesteps is None else coefficients.detach()[:, :, timesteps[0]]
    code = best.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([code], lr=REFINE_LEARNING_RATE)
    best_error = torch.full((len(best),), float("inf"), device=best.device)
    with torch.enable_grad():
        for _ in range(steps + 1):
            recon = vae.decode_flat(code, projected=True, timesteps=timesteps)
            per_case = (recon.float() - target).pow(2).flatten(1).sum(dim=1)
            improved = per_case.detach() < best_error
            best_error = torch.where(improved, per_case.detach(), best_error)
            best[improved] = code.detach()[improved]
            (gradient,) = torch.autograd.grad(per_case.sum(), code)
            code.grad = gradient
            optimiser.step()
    return best
