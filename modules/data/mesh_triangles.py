"""The triangles that mesh maps and VTU files draw the node window on: the mesh's own, or masked Delaunay.

With `mesh_connectivity_path` holding cells (a meshio mesh, or an [M, 3] .npy/.csv of triangles),
its triangles are drawn (quads split in two, quadratic cells by their corners). Otherwise the node
coordinates are Delaunay-triangulated, and Delaunay fills every hole and notch of the part: its
triangulation covers the convex hull. Those triangles are masked.

The rule: a triangle is kept when its circumradius is at most MASK_RATIO times the local node
spacing: the largest, among its three nodes, of the distance to the second-nearest other node.
Measured on a real mesh with a hole (3,248 nodes, 6,240 triangles, a P1 mesh of minimum angle 30
degrees): every triangle of the mesh itself has circumradius <= 0.96 x that spacing, every Delaunay
triangle across the hole >= 10.2 x, so exactly the mesh's own triangles are kept.
The longest edge cannot separate them: across a hole, Delaunay joins three consecutive boundary nodes
into thin triangles whose longest edge is only ~2 x the boundary spacing (as long as a mesh element's
edges), but whose circumradius is the hole's radius. With MASK_RATIO 2, a square grid (0.71) and
rectangular cells up to aspect ratio 3.9 are kept, triangles with angles down to about 15 degrees are
kept, and a hole or notch is emptied once at least 13 nodes line its edge (its circle's radius is then
> 2 x their spacing). Meshes outside that (strongly graded or stretched cells, holes lined by fewer
nodes) should give their cells through mesh_connectivity_path. The second-nearest node rather than
the nearest: in scattered nodes one close pair would shrink the spacing of every triangle around it
(on 20,000 random points 6 % of the triangles were masked with the nearest, 1 % with the second,
mostly thin ones on the hull's edge); on a mesh both are the element size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from modules.config.schema import DataConfig, PhysicsLossConfig
from modules.data.mesh_cells import CellBlock, read_mesh_cells

MASK_RATIO = 2.0
"""A Delaunay triangle is kept while circumradius <= MASK_RATIO x the local spacing of its nodes (see the module
docstring for why circumradius and why 2)."""

# How each cell type becomes triangles (meshio/VTK node order): corner triples; other types have none.
_TRIANGLES_OF_CELL = {
    "triangle": ((0, 1, 2),), "triangle6": ((0, 1, 2),), "triangle7": ((0, 1, 2),),
    "quad": ((0, 1, 2), (0, 2, 3)), "quad8": ((0, 1, 2), (0, 2, 3)), "quad9": ((0, 1, 2), (0, 2, 3)),
}


@dataclass(frozen=True)
class MeshTriangles:
    """Triangles [M, 3] of the node window (numbered from 0) and where they came from, for the run log."""

    triangles: np.ndarray
    source: str

    def describe(self) -> str:
        return f"{len(self.triangles)} triangles from {self.source}"


def planar_axes(coordinates: np.ndarray) -> Tuple[int, int]:
    """The two coordinate axes a map is drawn on: x, y; for 3 columns the two of largest extent (a planar part
    stored in 3-D has one near-constant axis)."""
    if coordinates.shape[1] == 2:
        return 0, 1
    first, second = sorted(np.argsort(-np.ptp(coordinates, axis=0), kind="stable")[:2])
    return int(first), int(second)


def triangles_of_cells(blocks: Sequence[CellBlock]) -> np.ndarray:
    """[M, 3] triangles of the surface cells among `blocks` (none from edges or volume cells)."""
    parts: List[np.ndarray] = []
    for cell_type, cells in blocks:
        for corners in _TRIANGLES_OF_CELL.get(cell_type, ()):
            parts.append(np.asarray(cells, dtype=np.int64)[:, list(corners)])
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)


def window_triangles(triangles: np.ndarray, node_start: int, node_stop: int) -> np.ndarray:
    """The triangles with all three nodes in [node_start, node_stop), re-numbered from 0."""
    inside = ((triangles >= node_start) & (triangles < node_stop)).all(axis=1)
    return triangles[inside] - node_start


def local_spacing(points: np.ndarray) -> np.ndarray:
    """[N] distance from each point to the second-nearest point at another position (coincident nodes, as on
    tied interfaces, count once)."""
    from scipy.spatial import cKDTree

    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    neighbours = min(2, len(unique) - 1)
    if neighbours < 1:
        return np.zeros(len(points))
    distances, _ = cKDTree(unique).query(unique, k=neighbours + 1)
    return distances[:, neighbours][np.asarray(inverse).reshape(-1)]


def circumradii(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[M] circumradius of each triangle (inf for a degenerate one): abc / (4 area)."""
    a, b, c = (points[triangles[:, k]] for k in range(3))
    sides = np.linalg.norm(b - c, axis=1) * np.linalg.norm(a - c, axis=1) * np.linalg.norm(a - b, axis=1)
    twice_area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    with np.errstate(divide="ignore"):
        return np.where(twice_area > 0, sides / (2.0 * twice_area), np.inf)


def masked_delaunay(coordinates: np.ndarray, ratio: float = MASK_RATIO) -> Tuple[np.ndarray, int]:
    """(Delaunay triangles [M, 3] of the nodes on their planar_axes, without those larger than the mesh around
    them; how many were masked). Raises ValueError when the nodes cannot be triangulated (fewer than 3
    distinct, or all on one line)."""
    from scipy.spatial import Delaunay, QhullError

    coordinates = np.asarray(coordinates, dtype=np.float64)
    points = coordinates[:, list(planar_axes(coordinates))]
    try:
        triangles = Delaunay(points).simplices.astype(np.int64)
    except (QhullError, ValueError) as error:
        raise ValueError(f"the {len(points)} node coordinates cannot be triangulated: fewer than 3 distinct points "
                         f"or all on one line ({str(error).splitlines()[0]})") from None
    spacing = local_spacing(points)[triangles].max(axis=1)
    keep = circumradii(points, triangles) <= ratio * spacing
    return triangles[keep], int((~keep).sum())


def mesh_triangles(data: DataConfig, physics: PhysicsLossConfig, coordinates: Optional[np.ndarray],
                   base_dir: Path) -> Optional[MeshTriangles]:
    """The window's triangles: the cells of mesh_connectivity_path when it has surface cells inside the
    window, else masked Delaunay of planar `coordinates` (already cut to the window). None without
    coordinates or when they lie on one line, and for 3-D coordinates without cells: a Delaunay of their
    projection would join nodes of a curved part that are not neighbours (maps then project on their own;
    VTU files get vertices)."""
    if coordinates is None:
        return None
    fallback = ""
    if physics.connectivity_path:
        path = Path(base_dir) / physics.connectivity_path
        triangles = window_triangles(triangles_of_cells(read_mesh_cells(path, data.num_nodes)),
                                     data.node_start, data.node_stop)
        if len(triangles):
            return MeshTriangles(triangles, f"the cells of {path}")
        fallback = f"; {path} has no triangles or quads inside the node window"
    if coordinates.shape[1] != 2:
        return None
    try:
        triangles, masked = masked_delaunay(coordinates)
    except ValueError:
        return None  # nodes on one line (a 1-D model): no map to draw; plot_dual_view says so if asked for one
    return MeshTriangles(triangles, f"a Delaunay triangulation of coordinates_path ({masked} triangles larger than "
                                    f"the mesh around them masked, e.g. across holes){fallback}")
