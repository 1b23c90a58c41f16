"""The mesh's neighbour graph for the physics loss's spatial term: unique undirected edges [E, 2].

Edges come from `mesh_connectivity_path` (the sides of its cells: node pairs [E, 2] or triangles
[M, 3] in a .npy or .csv, or any mesh file meshio reads; see mesh_cells.py) or, without one, from
the k nearest neighbours of the node coordinates. Indices in a connectivity file are 0-based node numbers of the whole
sweep (columns of the dataset, 0..Dim3-1); the graph is then cut to the node window
Dim3_start..Dim3_end and re-numbered from 0, the numbering the VAE sees.

Self-loops (i == i) carry no difference and are dropped; `MeshGraph` counts them so the run log
can say so. Edges are returned with i < j, sorted and without duplicates.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from modules.config.schema import DataConfig, PhysicsLossConfig
from modules.data.mesh_cells import read_mesh_cells
from modules.errors import DataError

# Edges of each linear cell type (meshio/VTK node order): the element's sides, not its diagonals.
_LINEAR_CELL_EDGES: Dict[str, Sequence[Tuple[int, int]]] = {
    "vertex": (),
    "line": ((0, 1),),
    "triangle": ((0, 1), (1, 2), (2, 0)),
    "quad": ((0, 1), (1, 2), (2, 3), (3, 0)),
    "tetra": ((0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)),
    "pyramid": ((0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4), (2, 4), (3, 4)),
    "wedge": ((0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (0, 3), (1, 4), (2, 5)),
    "hexahedron": ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                   (0, 4), (1, 5), (2, 6), (3, 7)),
}

# Quadratic cells: (corner, mid-side node, corner) per side; each side becomes two edges through its mid node.
_QUADRATIC_CELL_SIDES: Dict[str, Sequence[Tuple[int, int, int]]] = {
    "line3": ((0, 2, 1),),
    "triangle6": ((0, 3, 1), (1, 4, 2), (2, 5, 0)),
    "quad8": ((0, 4, 1), (1, 5, 2), (2, 6, 3), (3, 7, 0)),
    "tetra10": ((0, 4, 1), (1, 5, 2), (2, 6, 0), (0, 7, 3), (1, 8, 3), (2, 9, 3)),
    "hexahedron20": ((0, 8, 1), (1, 9, 2), (2, 10, 3), (3, 11, 0), (4, 12, 5), (5, 13, 6), (6, 14, 7),
                     (7, 15, 4), (0, 16, 4), (1, 17, 5), (2, 18, 6), (3, 19, 7)),
}

@dataclass(frozen=True)
class MeshGraph:
    """Edges of the node window, numbered from 0, and where they came from."""

    edges: np.ndarray
    """[E, 2] int64, i < j, unique."""
    source: str
    """Where the edges came from, for the run log."""
    self_loops_ignored: int = 0
    """Edges i-i found in the file and dropped."""
    edges_outside_window: int = 0
    """Edges of the file with a node outside Dim3_start..Dim3_end, dropped."""

    def describe(self) -> str:
        text = f"{len(self.edges)} edges from {self.source}"
        if self.self_loops_ignored:
            text += f"; {self.self_loops_ignored} self-loops ignored"
        if self.edges_outside_window:
            text += f"; {self.edges_outside_window} edges leaving the node window dropped"
        return text


def cell_edges(cell_type: str, cells: np.ndarray) -> np.ndarray:
    """Edges [k, 2] of a block of cells [num_cells, nodes per cell] of a meshio cell type.

    Sides of known element types (linear, and quadratic through their mid-side nodes); polygons
    join consecutive nodes; any other type joins every pair of its nodes."""
    cells = np.asarray(cells, dtype=np.int64)
    if cells.ndim != 2 or cells.shape[1] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if cell_type in _LINEAR_CELL_EDGES:
        pairs: Sequence[Tuple[int, int]] = _LINEAR_CELL_EDGES[cell_type]
    elif cell_type in _QUADRATIC_CELL_SIDES:
        pairs = [pair for a, mid, b in _QUADRATIC_CELL_SIDES[cell_type] for pair in ((a, mid), (mid, b))]
    elif cell_type.startswith("polygon"):
        size = cells.shape[1]
        pairs = [(k, (k + 1) % size) for k in range(size)]
    else:
        pairs = list(combinations(range(cells.shape[1]), 2))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    first, second = np.array(pairs, dtype=np.int64).T
    return np.stack([cells[:, first], cells[:, second]], axis=-1).reshape(-1, 2)


def unique_undirected(edges: np.ndarray) -> Tuple[np.ndarray, int]:
    """(edges with i < j, sorted, duplicates and self-loops removed; number of self-loops removed)."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    loops = edges[:, 0] == edges[:, 1]
    ordered = np.sort(edges[~loops], axis=1)
    unique = np.unique(ordered, axis=0) if len(ordered) else ordered
    return unique.astype(np.int64), int(loops.sum())


def knn_edges(coordinates: np.ndarray, neighbours: int) -> np.ndarray:
    """Each node joined to its `neighbours` nearest nodes (fewer when the mesh is smaller), symmetrised:
    an edge exists when either end counts the other among its nearest."""
    from sklearn.neighbors import NearestNeighbors

    coordinates = np.asarray(coordinates, dtype=np.float64)
    count = len(coordinates)
    if count < 2:
        return np.zeros((0, 2), dtype=np.int64)
    k = min(neighbours, count - 1)
    # k + 1 because each node finds itself first; with duplicate coordinates a twin may take that place,
    # so self-pairs are removed by value, not by dropping column 0.
    nearest = NearestNeighbors(n_neighbors=k + 1).fit(coordinates).kneighbors(coordinates, return_distance=False)
    rows = np.repeat(np.arange(count), k + 1)
    edges, _ = unique_undirected(np.stack([rows, nearest.reshape(-1)], axis=1))
    return edges


def restrict_to_window(edges: np.ndarray, node_start: int, node_stop: int) -> Tuple[np.ndarray, int]:
    """(edges with both ends in [node_start, node_stop), re-numbered from 0; number of edges dropped)."""
    inside = ((edges >= node_start) & (edges < node_stop)).all(axis=1)
    return edges[inside] - node_start, int((~inside).sum())


def read_connectivity(path: Path, num_nodes: int) -> np.ndarray:
    """Raw edges [E, 2] (0-based numbers of the whole sweep, unchecked for duplicates): the sides of the cells
    of a .npy, a .csv or a mesh file meshio reads (mesh_cells.read_mesh_cells)."""
    blocks = [cell_edges(cell_type, cells) for cell_type, cells in read_mesh_cells(path, num_nodes)]
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)


def build_mesh_graph(physics: PhysicsLossConfig, data: DataConfig, coordinates: Optional[np.ndarray],
                     base_dir: Path) -> MeshGraph:
    """The window's edges: from physics.connectivity_path when set (relative to base_dir), otherwise the
    physics.neighbours nearest neighbours of `coordinates` (already cut to the node window)."""
    if physics.connectivity_path:
        path = base_dir / physics.connectivity_path
        edges, self_loops = unique_undirected(read_connectivity(path, data.num_nodes))
        edges, outside = restrict_to_window(edges, data.node_start, data.node_stop)
        if len(edges) == 0:
            raise DataError(f"mesh_connectivity_path {path}: no edge is left that joins two nodes of the node "
                            f"window {data.node_start}..{data.node_stop - 1} (Dim3_start..Dim3_end) "
                            f"({self_loops} self-loops ignored, {outside} edges leave the window); fix: give the "
                            f"mesh's real edges, widen the window, or set physics_spatial_weight 0")
        return MeshGraph(edges, f"mesh_connectivity_path {path}", self_loops, outside)
    if coordinates is None:
        raise DataError("physics_spatial_weight > 0 needs the mesh, but neither mesh_connectivity_path nor "
                        "coordinates_path is set; fix: add one of them to condition.txt, or set "
                        "physics_spatial_weight 0")
    edges = knn_edges(coordinates, physics.neighbours)
    if len(edges) == 0:
        raise DataError(f"coordinates_path {data.coordinates_path}: the node window has {len(coordinates)} node, "
                        f"so no neighbour graph can be built; fix: use a window of at least 2 nodes or set "
                        f"physics_spatial_weight 0")
    return MeshGraph(edges, f"the {physics.neighbours} nearest neighbours of each node in {data.coordinates_path}")
