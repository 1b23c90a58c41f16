"""Which decoder reconstructs: the VAE's own, or a prediction decoder, whichever reconstructs validation best.

Reconstruction refines each case's code by L-BFGS through a frozen decoder (surrogate/refinement.py), so any
decoder of the VAE's architecture can serve. The prediction decoders, trained end to end on codes that are
smooth functions of the design, generalise better on the advection sweep than the VAE's decoder, trained on
144 encoder codes (train error 0.0008 against validation 0.03 in its loss): held-out reconstruction 0.4085
against 0.4807 on front-dev's test designs, 0.336 against 0.432 on its validation designs (README,
ablations). Validation decides per run; the number of latent numbers stays the VAE's.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from modules.models.vae import HierarchicalVAE
from modules.runtime import memory
from modules.runtime.devices import evaluation_mode
from modules.surrogate.inverse_design import DesignPath, design_reconstruction
from modules.surrogate.refinement import refined_reconstruction


def reconstruction_error(vae: HierarchicalVAE, coefficients: torch.Tensor, device: torch.device,
                         batch_size: int = 32, starts: Optional[torch.Tensor] = None) -> float:
    """Pooled relative error of the refined reconstruction of cases' mode coefficients [k, C, T] (basis units,
    where squared errors are the physically weighted field errors up to the basis scale); `starts`: the
    decoder's second starts (refinement.refined_reconstruction)."""
    with evaluation_mode(vae):
        return _pooled_error(lambda target: refined_reconstruction(vae, target, vae.cfg.refine_steps, starts),
                             coefficients, device, batch_size)


def design_reconstruction_error(path: DesignPath, coefficients: torch.Tensor, candidates: torch.Tensor, steps: int,
                                device: torch.device, batch_size: int = 32) -> float:
    """reconstruction_error of inverse design through the prediction path `path`, from the standardised
    candidate designs [S, p] (the training designs)."""
    candidates = candidates.to(device)
    with evaluation_mode(path):
        return _pooled_error(lambda target: design_reconstruction(path, target, candidates, steps),
                             coefficients, device, batch_size)


def _pooled_error(reconstruct: Callable[[torch.Tensor], torch.Tensor], coefficients: torch.Tensor,
                  device: torch.device, batch_size: int) -> float:
    """||reconstruct(x) - x|| / ||x|| pooled over the cases [k, C, T], a batch at a time on `device`."""
    error = total = 0.0
    for chunk in memory.chunk_slices(len(coefficients), batch_size):
        target = coefficients[chunk].to(device)
        error += float((reconstruct(target).float() - target).pow(2).sum())
        total += float(target.pow(2).sum())
    return (error / max(total, 1e-30)) ** 0.5


def pick_reconstruction_decoder(vae: HierarchicalVAE, prediction_decoders: Sequence[HierarchicalVAE],
                                coefficients: torch.Tensor, device: torch.device,
                                starts: Optional[Sequence[torch.Tensor]] = None) -> Tuple[Optional[int], List[float]]:
    """(None for the VAE's own decoder, or k for prediction_decoders[k]; the validation error of each, the VAE's
    first). The VAE's decoder keeps ties: a prediction decoder must reconstruct strictly better. starts[k]:
    prediction_decoders[k]'s second starts, as it would reconstruct with them (the VAE's decoder has none)."""
    member_starts = list(starts) if starts is not None else [None] * len(prediction_decoders)
    errors = [reconstruction_error(vae, coefficients, device)]
    errors += [reconstruction_error(candidate, coefficients, device, starts=member)
               for candidate, member in zip(prediction_decoders, member_starts)]
    best = min(range(len(errors)), key=errors.__getitem__)
    return (None if best == 0 else best - 1), errors
