"""MLP conditioner: a vector of design parameters -> the VAE latent code."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from modules.models.latent_heads import LatentHeads
from modules.models.latent_layout import LatentPrediction


def block_dropout_rates(dropout_rate: float, num_blocks: int) -> List[float]:
    """Dropout of each residual block: dropout_rate * (1 + i / num_blocks) for block i.

    Deeper blocks hold more abstract, more easily memorised features of the few hundred
    designs a sweep has, so they get up to about twice the base rate. Growth stops at
    0.5 (a base rate above 0.5 is used as given and not grown).
    """
    ceiling = max(dropout_rate, 0.5)
    return [min(dropout_rate * (1.0 + i / num_blocks), ceiling) for i in range(num_blocks)]


class GatedResidualBlock(nn.Module):
    """[B, in_width] -> [B, out_width], mixing a two-layer path and a projected skip by a learned gate.

    gate = sigmoid(Linear(main)); mixed = gate * main + (1 - gate) * skip;
    out = Dropout(GELU(LayerNorm(mixed))). The gate lets each unit choose how much
    nonlinearity it needs, which helps on smooth parametric maps where the skip alone
    is often close to right.
    """

    def __init__(self, in_width: int, out_width: int, dropout_rate: float):
        super().__init__()
        self.main_path = nn.Sequential(
            nn.Linear(in_width, out_width),
            nn.LayerNorm(out_width),
            nn.GELU(),
            nn.Linear(out_width, out_width),
        )
        self.skip = nn.Linear(in_width, out_width) if in_width != out_width else nn.Identity()
        self.gate = nn.Linear(out_width, out_width)
        self.norm = nn.LayerNorm(out_width)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout_rate)

    def forward_with_gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(output [B, out_width], gate [B, out_width] in (0, 1))."""
        main = self.main_path(x)
        gate = torch.sigmoid(self.gate(main))
        mixed = gate * main + (1.0 - gate) * self.skip(x)
        return self.dropout(self.activation(self.norm(mixed))), gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gate(x)[0]


class ParametricConditioner(nn.Module):
    """[B, num_params] -> LatentPrediction(main [B, latent_dim_main], hier [B, levels, latent_dim_hier]).

    Input Linear -> LayerNorm -> GELU to hidden_widths[0], one gated residual block
    per consecutive pair of hidden_widths, then the main and hierarchical heads.
    Inputs are expected already scaled (e.g. standardised per column).
    """

    def __init__(self, num_params: int, latent_dim_main: int, latent_dim_hier: int, num_hier_levels: int,
                 hidden_widths: Sequence[int] = (64, 128, 64), dropout_rate: float = 0.1):
        super().__init__()
        if not hidden_widths:
            raise ValueError("hidden_widths must list at least one width, e.g. (64, 128, 64)")
        self.num_params = num_params
        self.input_layer = nn.Sequential(
            nn.Linear(num_params, hidden_widths[0]),
            nn.LayerNorm(hidden_widths[0]),
            nn.GELU(),
        )
        pairs = list(zip(hidden_widths[:-1], hidden_widths[1:]))
        rates = block_dropout_rates(dropout_rate, len(pairs))
        self.blocks = nn.ModuleList(
            GatedResidualBlock(in_width, out_width, rate) for (in_width, out_width), rate in zip(pairs, rates)
        )
        self.heads = LatentHeads(hidden_widths[-1], latent_dim_main, latent_dim_hier, num_hier_levels)

    def _check_input(self, params: torch.Tensor) -> None:
        if params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(f"expected parameters of shape [B, {self.num_params}] (num_param), "
                             f"got {list(params.shape)}")

    def features(self, params: torch.Tensor) -> torch.Tensor:
        """[B, num_params] -> [B, hidden_widths[-1]]."""
        self._check_input(params)
        hidden = self.input_layer(params)
        for block in self.blocks:
            hidden = block(hidden)
        return hidden

    def gate_values(self, params: torch.Tensor) -> List[torch.Tensor]:
        """The gate of each residual block for this batch, [B, out_width] each (for diagnostics)."""
        self._check_input(params)
        hidden = self.input_layer(params)
        gates = []
        for block in self.blocks:
            hidden, gate = block.forward_with_gate(hidden)
            gates.append(gate)
        return gates

    def forward(self, params: torch.Tensor) -> LatentPrediction:
        return self.heads(self.features(params))
