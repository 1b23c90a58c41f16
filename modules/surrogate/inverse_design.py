"""Reconstruction by inverse design: the design whose prediction best matches the field, and that prediction.

A field of a parametric sweep is a function of its design, and the prediction path (conditioners, their
decoders, the POD + GP blend, the amplitude scaling) is a differentiable map from the standardised design to
the field's mode coefficients, trained on codes that vary smoothly with the design. So a field can be encoded
as the design that predicts it best: L-BFGS over the p design numbers on the field's own error, from the
training design whose prediction is nearest the field. On impact-dev's test designs (the 5-member benchmark
run, offline) that reconstructs at 0.209 with 5 numbers against 0.260 for the VAE's decoder with 28 refined
latent numbers; on front-dev at 0.402 against 0.373 (README, ablations). Which way reconstructs is picked per
run on validation (training/reconstruction_choice.py). Parameter designs only: a drawing has no design
vector to search.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from modules.surrogate.refinement import nearest_codes, refine_codes


class DesignPath(nn.Module):
    """Standardised designs [k, p] -> the prediction's mode coefficients [k, C, T] (or [k, C, n] at timesteps
    [k, n]): the predictor (the conditioners, with the blend's scores and r side by side) and the prediction
    decoder that reads its code, with the design-prior code added when the conditioner predicts a correction
    to it (conditioner_bundle.predict_latents)."""

    def __init__(self, predictor: nn.Module, decoder: nn.Module, on_design_prior: bool):
        super().__init__()
        self.predictor, self.decoder, self.on_design_prior = predictor, decoder, on_design_prior

    def forward(self, designs: torch.Tensor, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        flat = self.predictor(designs).flat().float()
        if self.on_design_prior:
            flat = flat + self.decoder.design_latent(designs).float()
        return self.decoder.decode_flat(flat, projected=True, timesteps=timesteps)


def inverse_designs(path: DesignPath, coefficients: torch.Tensor, candidates: torch.Tensor,
                    steps: int) -> torch.Tensor:
    """coefficients [k, C, T] -> the standardised design [k, p] whose prediction is nearest each field: the
    candidate (e.g. the training designs [S, p]) whose prediction is nearest, refined by at most `steps` L-BFGS
    iterations on the field's error (never ending worse than that candidate)."""
    starts = nearest_codes(path, coefficients, candidates)
    return refine_codes(path, coefficients, starts, steps)


def design_reconstruction(path: DesignPath, coefficients: torch.Tensor, candidates: torch.Tensor,
                          steps: int) -> torch.Tensor:
    """coefficients [k, C, T] -> the prediction of each field's inverse design, [k, C, T] (basis units)."""
    designs = inverse_designs(path, coefficients, candidates, steps)
    with torch.no_grad():
        return path(designs)


RANGE_MARGIN = 0.05
"""A found design counts as outside the training designs' range beyond this share of each parameter's span."""


def outside_training_range(designs: np.ndarray, training: np.ndarray) -> np.ndarray:
    """[k] bool: designs [k, p] with a parameter outside the training designs' [S, p] range (+- RANGE_MARGIN of its
    span). Inverse design searches freely, since only the field's error counts for reconstruction; a design found
    far outside is where the surrogate extrapolates (on front-dev's test fields the found parameters' median errors
    were 2-7 % of their spans, but 9 of 40 designs left the range; on impact-dev 0.3-4 % and 2 of 40: README)."""
    low, high = training.min(axis=0), training.max(axis=0)
    margin = RANGE_MARGIN * (high - low)
    return ((designs < low - margin) | (designs > high + margin)).any(axis=1)
