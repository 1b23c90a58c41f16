"""The VAE's latent code: a main latent, then one hierarchical latent per decoder level, deep to shallow.

Its flat form [B, Lm + K*Lh] (main first, then each level) is what the conditioner predicts, the latent file
stores and `decode_flat` reads. Everything that sizes or splits it uses `LatentLayout`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from modules.config.schema import ModelConfig


@dataclass(frozen=True)
class LatentLayout:
    main: int
    """Lm = latent_dim_main."""
    hier: int
    """Lh = latent_dim_hier, per level."""
    levels: int
    """K = len(encoder_filters) - 1 hierarchical levels."""

    @classmethod
    def of(cls, config: ModelConfig) -> "LatentLayout":
        return cls(config.latent_dim_main, config.latent_dim_hier, config.num_hier_levels)

    @property
    def flat_size(self) -> int:
        """Lm + K*Lh: the latent numbers of one case."""
        return self.main + self.levels * self.hier

    def join(self, main: torch.Tensor, hier: Sequence[torch.Tensor]) -> torch.Tensor:
        """(main [B, Lm], K x [B, Lh] deep-to-shallow) -> flat [B, Lm + K*Lh]."""
        return torch.cat([main, *hier], dim=-1)

    def split(self, flat: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """flat [B, Lm + K*Lh] -> (main [B, Lm], K x [B, Lh] deep-to-shallow)."""
        if flat.dim() != 2 or flat.shape[1] != self.flat_size:
            raise ValueError(f"expected a flat latent of shape [B, {self.flat_size}] ({self.main} + {self.levels} x "
                             f"{self.hier}), got {list(flat.shape)}; build it with LatentCode.flat() or "
                             f"LatentPrediction.flat() of a model with the same ModelConfig")
        main, *hier = flat.split([self.main] + [self.hier] * self.levels, dim=1)
        return main, list(hier)


@dataclass
class LatentPrediction:
    """A latent code predicted by a conditioner: main [B, Lm]; hier [B, K, Lh]."""

    main: torch.Tensor
    hier: torch.Tensor

    def flat(self) -> torch.Tensor:
        """[B, Lm + K*Lh]: main first, then each level in order."""
        return torch.cat([self.main, self.hier.reshape(self.hier.shape[0], -1)], dim=1)
