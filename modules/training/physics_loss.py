"""Physics-aware loss terms on VAE fields [B, N, T] (pure tensor math, no I/O).

Every term is a mean squared error of a linear quantity of the field, so each depends only on
the error e = recon - target:

* temporal     - the time derivative: e[..., t+1] - e[..., t], mean over batch, nodes and T-1 steps;
* spatial      - differences across mesh edges: e[:, i, :] - e[:, j, :], mean over batch, edges, time;
* conservation - the per-timestep sum over nodes, taken as the MEAN over nodes so the term does
                 not grow with the mesh: mean over batch and time of (mean_n e[:, n, t])**2; with
                 num_var > 1, of each variable's mean (a sum across variables adds unlike quantities).

With num_var > 1 the N channels are nodes x variables, node-major (modules.data.variables): the
temporal term is per channel anyway, and the spatial term's edges join the same variable of two
nodes (variables.channel_edges).

Node weights. `reconstruction_loss` weights each node's squared error by w_n (the physical range
squared, mean 1), which turns scaled units into physical ones. These terms use the same w through
s_n = sqrt(w_n): they are computed on s_n * e_n, the error in (normalised) physical units. Because
the per-node offset of the scaler cancels in any difference of errors, this makes the temporal term
the error of the physical time derivative (= w-weighted, as in the reconstruction), the spatial
term the error of the physical difference across each edge, and the conservation term the error
of the physical nodal mean. Without node weights, s = 1 and the terms are in scaled units.

All terms are squared errors whatever Loss_type the reconstruction uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from modules.config.schema import PhysicsLossConfig

TERM_NAMES = ("temporal", "spatial", "conservation")

# Floor of a term's value in the adaptive ratio recon / term: keeps the ratio finite when a term is 0.
ADAPTIVE_EPS = 1e-12


def _physical_error(recon: torch.Tensor, target: torch.Tensor,
                    node_weights: Optional[torch.Tensor]) -> torch.Tensor:
    error = recon.float() - target.float()
    if node_weights is None:
        return error
    return error * node_weights.to(error.device, torch.float32).sqrt()[None, :, None]


def temporal_loss(recon: torch.Tensor, target: torch.Tensor,
                  node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error of x[..., 1:] - x[..., :-1] over [B, N, T-1]; 0 when T < 2 (no derivative)."""
    error = _physical_error(recon, target, node_weights)
    if error.shape[-1] < 2:
        return error.sum() * 0.0
    return (error[..., 1:] - error[..., :-1]).pow(2).mean()


def spatial_loss(recon: torch.Tensor, target: torch.Tensor, edges: torch.Tensor,
                 node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error of x[:, i, :] - x[:, j, :] over the edges (i, j) [E, 2], batch and time.

    Gathers [B, E, T]: a few times the batch (E is about 3 N for a kNN graph of 6), far less than the
    VAE's activations, and exact, unlike the Laplacian form e^T L e, which cancels in float32."""
    error = _physical_error(recon, target, node_weights)
    edges = edges.to(error.device)
    difference = error.index_select(1, edges[:, 0]) - error.index_select(1, edges[:, 1])
    return difference.pow(2).mean()


def conservation_loss(recon: torch.Tensor, target: torch.Tensor, node_weights: Optional[torch.Tensor] = None,
                      num_variables: int = 1) -> torch.Tensor:
    """Mean over batch, time (and variables) of the squared error of the mean over nodes (the nodal sum / N)."""
    error = _physical_error(recon, target, node_weights)
    batch, channels, steps = error.shape
    return error.reshape(batch, channels // num_variables, num_variables, steps).mean(dim=1).pow(2).mean()


@dataclass
class PhysicsTerms:
    """One batch's physics loss; `total` carries the gradient."""

    total: torch.Tensor
    """Sum over active terms of effective weight x term (scalar)."""
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    """Each active term's value (scalar, with gradient), keyed by TERM_NAMES."""
    weights: Dict[str, torch.Tensor] = field(default_factory=dict)
    """The weight each term was multiplied by this batch, 0-d and detached (the configured one unless
    adaptive); tensors, so adaptive weighting adds no device-to-host sync per batch."""


class PhysicsLoss:
    """The configured physics terms of a reconstruction [B, N, T] against its target.

    edges [E, 2] (channel numbers of the VAE's fields) are needed when spatial_weight > 0; num_variables: the
    variables per node among those channels (for the conservation term).

    Adaptive weighting (adaptive_weighting 1) is a stateless per-batch loss-ratio balance: a term's
    effective weight is weight x recon / term (both detached), so its value in the total is exactly
    weight x recon while its gradient is the term's, rescaled. Each term then keeps the share of the
    loss its weight asks for even when its raw size is orders of magnitude off the reconstruction's.
    The seed's scheme (a softmax over the recent trend of each term) is not copied: it keeps state
    that resume and DDP would have to save and synchronise, and its update rule has no clear target
    share; this one has a stated target and nothing to save, so resume stays exact.
    """

    def __init__(self, config: PhysicsLossConfig, edges: Optional[torch.Tensor] = None, num_variables: int = 1):
        self.config = config
        self.num_variables = num_variables
        self.weights = {"temporal": config.temporal_weight, "spatial": config.spatial_weight,
                        "conservation": config.conservation_weight}
        self.edges: Optional[torch.Tensor] = None
        if edges is not None:
            edges = torch.as_tensor(edges, dtype=torch.long)
            if edges.dim() != 2 or edges.shape[1] != 2:
                raise ValueError(f"PhysicsLoss: edges must have shape [E, 2], got {list(edges.shape)}")
            self.edges = edges
            self._max_node = int(edges.max()) if len(edges) else -1
        self._edges_on: Dict[torch.device, torch.Tensor] = {}
        if config.spatial_weight > 0 and (self.edges is None or len(self.edges) == 0):
            raise ValueError("PhysicsLoss: spatial_weight > 0 needs the mesh edges [E, 2] "
                             "(build them with mesh_graph.build_mesh_graph)")

    @property
    def active(self) -> bool:
        return self.config.active

    @property
    def active_terms(self) -> tuple:
        return tuple(name for name in TERM_NAMES if self.weights[name] > 0)

    def term(self, name: str, recon: torch.Tensor, target: torch.Tensor,
             node_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        if name == "temporal":
            return temporal_loss(recon, target, node_weights)
        if name == "spatial":
            if self._max_node >= recon.shape[1]:
                raise ValueError(f"PhysicsLoss: an edge uses node {self._max_node}, but the fields have "
                                 f"{recon.shape[1]} nodes")
            if recon.device not in self._edges_on:  # one copy per device, not one per batch
                self._edges_on[recon.device] = self.edges.to(recon.device)
            return spatial_loss(recon, target, self._edges_on[recon.device], node_weights)
        if name == "conservation":
            return conservation_loss(recon, target, node_weights, self.num_variables)
        raise ValueError(f"PhysicsLoss: unknown term {name!r}; terms are {', '.join(TERM_NAMES)}")

    def __call__(self, recon: torch.Tensor, target: torch.Tensor, node_weights: Optional[torch.Tensor] = None,
                 reference: Optional[torch.Tensor] = None) -> PhysicsTerms:
        """reference: the reconstruction loss of the same batch, required with adaptive weighting."""
        if self.config.adaptive_weighting and reference is None:
            raise ValueError("PhysicsLoss: adaptive weighting needs the batch's reconstruction loss as reference")
        total = recon.new_zeros((), dtype=torch.float32)
        result = PhysicsTerms(total=total)
        for name in self.active_terms:
            value = self.term(name, recon, target, node_weights)
            weight = torch.tensor(self.weights[name], dtype=torch.float32, device=value.device)
            if self.config.adaptive_weighting:
                weight = weight * reference.detach().float() / value.detach().clamp_min(ADAPTIVE_EPS)
            result.terms[name] = value
            result.weights[name] = weight
            total = total + weight * value
        result.total = total
        return result
