"""Prediction of fields proportional to one design parameter (a load's amplitude): field = r x unit field.

Linear physics driven by a load (an impact's force, a heat source's power) answers in proportion to the load's
amplitude, so the field is `r x G(other parameters)` with r the parameter over a reference value. Networks and
Gaussian processes fitted to 144 designs learn that product only roughly; given it, they learn G alone. Measured
on impact-dev (the wave after a force pulse of strength 0.5-2; test designs, pooled): POD + GP on the fields
divided by the strength 0.351 against 0.489 on the fields themselves (README, ablations).

A load answers about the state without it, which need not be 0: a heated plate's temperatures are its ambient
value plus power x G. So the scaling is about a constant reference field c: field = c + r x (G - c).
Everything happens in the spatial-mode coefficients (basis units), where the node scaler and the basis are
affine: the coefficients of c + r x (G - c) are zero + r x (coefficients of G - zero), `zero` the coefficients
of the constant field c. The predicted code carries r as its last number (the ensemble's side-by-side convention,
models/ensemble.py), so `predict`, the band's draws and the report go through the same two calls as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from modules.models.decoder import at_timesteps
from modules.models.ensemble import MembersCode


@dataclass
class AmplitudeScaling:
    """The field is proportional to design parameter `column` (0-based); r = offset + slope x (its standardised
    input), which is the parameter over its mean on the training designs."""

    column: int
    name: str
    offset: float
    slope: float
    zero: torch.Tensor
    """[C, T] float32: the mode coefficients of the reference field (the constant `reference` everywhere)."""
    reference: float = 0.0
    """The field's value without the load (0, or e.g. an ambient temperature), about which it scales."""

    def describe(self) -> str:
        """In words, for logs, the report and predict: 'parameter 4 x a unit field (about 20)'."""
        return f"{self.name} x a unit field" + (f" (about {self.reference:.6g})" if self.reference else "")

    def ratios(self, inputs: torch.Tensor) -> torch.Tensor:
        """Standardised design inputs [B, p] -> r [B] (float32)."""
        return (self.offset + self.slope * inputs[:, self.column].double()).float()

    def to_unit(self, coefficients: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """Mode coefficients [B, C, T] of fields -> those of the fields / r."""
        zero = self.zero.to(coefficients.device, coefficients.dtype)
        return zero + (coefficients - zero) / ratios.to(coefficients.device, coefficients.dtype)[:, None, None]

    def from_unit(self, coefficients: torch.Tensor, ratios: torch.Tensor,
                  timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mode coefficients [B, C, T'] of unit fields -> those of r x the fields (T' = len(timesteps) if given)."""
        zero = self.zero.to(coefficients.device, coefficients.dtype)[None].expand(len(coefficients), -1, -1)
        if timesteps is not None:
            zero = at_timesteps(zero, timesteps)
        return zero + (coefficients - zero) * ratios.to(coefficients.device, coefficients.dtype)[:, None, None]

    def conditioner(self, predictor: torch.nn.Module) -> "AmplitudeConditioner":
        return AmplitudeConditioner(predictor, self)

    def decoder(self, unit_decoder: torch.nn.Module) -> "AmplitudeDecoder":
        return AmplitudeDecoder(unit_decoder, self)

    def state_dict(self) -> Dict[str, object]:
        return {"column": self.column, "name": self.name, "offset": self.offset, "slope": self.slope,
                "zero": self.zero.detach().cpu(), "reference": self.reference}

    @classmethod
    def from_state_dict(cls, state: Dict[str, object]) -> "AmplitudeScaling":
        zero = state["zero"]
        if not isinstance(zero, torch.Tensor) or zero.dim() != 2 or not bool(torch.isfinite(zero).all()):
            raise ValueError("'zero' must be finite mode coefficients [C, T]")
        reference = float(state.get("reference", 0.0))  # scalings saved before references existed: about 0
        if not math.isfinite(reference):
            raise ValueError(f"'reference' must be a finite number, not {reference}")
        return cls(int(state["column"]), str(state["name"]), float(state["offset"]), float(state["slope"]),
                   zero.float(), reference)


class AmplitudeConditioner(torch.nn.Module):
    """Design inputs -> [the unit field's predicted code, r] side by side."""

    def __init__(self, predictor: torch.nn.Module, amplitude: AmplitudeScaling):
        super().__init__()
        self.predictor, self.amplitude = predictor, amplitude

    def forward(self, inputs: torch.Tensor) -> MembersCode:
        code = self.predictor(inputs).flat().float()
        return MembersCode(torch.cat([code, self.amplitude.ratios(inputs).to(code.device)[:, None]], dim=1))


class AmplitudeDecoder(torch.nn.Module):
    """[unit field's code, r] -> the mode coefficients of r x the unit field (projected=True only)."""

    def __init__(self, unit_decoder: torch.nn.Module, amplitude: AmplitudeScaling):
        super().__init__()
        self.unit_decoder, self.amplitude = unit_decoder, amplitude

    def decode_flat(self, flat: torch.Tensor, projected: bool = False,
                    timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not projected:
            raise ValueError("amplitude scaling decodes mode coefficients only (projected=True)")
        unit = self.unit_decoder.decode_flat(flat[:, :-1], projected=True, timesteps=timesteps)
        return self.amplitude.from_unit(unit, flat[:, -1], timesteps)

    def design_latent(self, design: torch.Tensor) -> torch.Tensor:
        """The unit decoder's design-prior code, and nothing added to r."""
        code = self.unit_decoder.design_latent(design)
        return torch.cat([code, code.new_zeros(len(code), 1)], dim=1)
