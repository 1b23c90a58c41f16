"""How a sweep's variables (the trailing num_var axis) sit among the numbers the VAE sees, and back.

Every variable is trained. A stored window [timesteps, nodes, variables] is read as [timesteps, nodes x
variables], node-major: channel = node x num_var + variable. Each channel then gets its own scaling and
its own channel of the VAE, exactly as a node does; reshaping gives users their [..., nodes, variables]
back. Node-major keeps a node's variables side by side, so a block of consecutive channels is a block
of nodes (the node-mask augmentation relies on it).
"""
from __future__ import annotations

import numpy as np

from modules.config.schema import DataConfig


def as_channels(window: np.ndarray) -> np.ndarray:
    """[..., nodes, variables] -> [..., nodes x variables], node-major (a view when the window is contiguous)."""
    return window.reshape(window.shape[:-2] + (window.shape[-2] * window.shape[-1],))


def as_node_variables(fields: np.ndarray, num_variables: int) -> np.ndarray:
    """[..., nodes x variables] -> [..., nodes, variables]; unchanged [..., nodes] when num_var is 1."""
    if num_variables == 1:
        return fields
    return fields.reshape(fields.shape[:-1] + (fields.shape[-1] // num_variables, num_variables))


def variable_of(fields: np.ndarray, variable: int, num_variables: int) -> np.ndarray:
    """[..., nodes x variables] -> [..., nodes] of one variable (0-based)."""
    return fields[..., variable::num_variables]


def axis_names(data: DataConfig, first: str = "cases") -> str:
    """The axes of an array given to users: 'cases, timesteps, nodes' (', variables' with num_var > 1)."""
    return f"{first}, timesteps, nodes" + (", variables" if data.num_variables > 1 else "")


def variable_shares(half_range: np.ndarray, num_variables: int) -> np.ndarray:
    """[variables] each variable's share of a squared error in physical units (of the physically weighted loss
    and of the report's relative L2 error): the sum of its channels' squared ranges over all channels'."""
    squared = np.asarray(half_range, dtype=np.float64).reshape(-1, num_variables) ** 2
    total = squared.sum()
    return squared.sum(axis=0) / total if total > 0 else np.full(num_variables, 1.0 / num_variables)


def channel_edges(node_edges: np.ndarray, num_variables: int) -> np.ndarray:
    """Edges between nodes [E, 2] -> the same edges within each variable [E x variables, 2] of channels."""
    if num_variables == 1:
        return node_edges
    variables = np.arange(num_variables)
    return (node_edges[:, None, :] * num_variables + variables[None, :, None]).reshape(-1, 2)
