"""A small ensemble of prediction paths (conditioner + its own decoder), averaged in mode coefficients.

Conditioners trained from different seeds scatter on the wave sweep's held-out designs (0.298, 0.312, 0.336
pooled error for seeds 0-2); the average of the three decoded predictions reached 0.286, better than each
(README, ablations). Each member keeps its own code space (its decoder was trained with it), so codes are
never averaged: the ensemble's code is the members' codes side by side, and decoding averages the members'
mode coefficients. The spatial basis reads coefficients out linearly, so this equals averaging the fields.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch

from modules.models.latent_layout import LatentPrediction


class MembersCode:
    """The members' flat codes side by side, [B, members x F], in the conditioners' output interface."""

    def __init__(self, flat: torch.Tensor):
        self._flat = flat

    def flat(self) -> torch.Tensor:
        return self._flat


class ConditionerEnsemble(torch.nn.Module):
    """Design inputs -> the members' codes side by side (member k at columns k*F .. (k+1)*F)."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = torch.nn.ModuleList(members)

    def forward(self, inputs: torch.Tensor) -> MembersCode:
        codes: List[LatentPrediction] = [member(inputs) for member in self.members]
        return MembersCode(torch.cat([code.flat() for code in codes], dim=1))


class DecoderEnsemble(torch.nn.Module):
    """The members' decoders: the members' codes side by side -> the mean of their decoded coefficients.

    Each decoder is a HierarchicalVAE holding that member's prediction decoder; only decode_flat is used."""

    def __init__(self, decoders: Sequence[torch.nn.Module]):
        super().__init__()
        if len(decoders) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(decoders)}")
        self.decoders = torch.nn.ModuleList(decoders)

    @property
    def members(self) -> int:
        return len(self.decoders)

    def decode_flat(self, flat: torch.Tensor, projected: bool = False,
                    timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, members x F] -> the members' mean decode ([B, C, T] coefficients when `projected`)."""
        if flat.shape[1] % self.members:
            raise ValueError(f"expected the {self.members} members' codes side by side, got width {flat.shape[1]}")
        parts = flat.chunk(self.members, dim=1)
        decoded = [decoder.decode_flat(part, projected=projected, timesteps=timesteps)
                   for decoder, part in zip(self.decoders, parts)]
        return torch.stack(decoded).mean(dim=0)

    def design_latent(self, design: torch.Tensor) -> torch.Tensor:
        """Each member's design-prior code side by side, [B, members x F]: the levels' prior means pass through
        each member's own trained decoder, so they differ between members."""
        return torch.cat([decoder.design_latent(design) for decoder in self.decoders], dim=1)


def decoder_copy(vae: torch.nn.Module) -> torch.nn.Module:
    """A copy of the VAE for another member's decoder, sharing the frozen spatial basis (95,008 x 256 floats at
    the seed's size) instead of copying it."""
    return copy.deepcopy(vae, memo={id(vae.basis): vae.basis})
