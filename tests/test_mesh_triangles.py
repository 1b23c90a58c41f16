"""Mesh triangles for maps and VTU files: the mesh's own cells when given, else Delaunay without the triangles
that fill holes."""
from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np
import pytest
from scipy.spatial import Delaunay

from modules.config.schema import DataConfig, PhysicsLossConfig
from modules.data.mesh_triangles import masked_delaunay, mesh_triangles, triangles_of_cells, window_triangles

HOLE_CENTRE, HOLE_RADIUS = np.array([0.5, 0.5]), 0.3


def plate_with_a_hole(grid: int = 21, ring: int = 32) -> np.ndarray:
    """A unit plate: grid nodes (spacing 0.05) outside a round hole, and `ring` nodes on the hole's edge."""
    axis = np.linspace(0.0, 1.0, grid)
    nodes = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    nodes = nodes[np.linalg.norm(nodes - HOLE_CENTRE, axis=1) > HOLE_RADIUS + 0.02]
    angles = np.linspace(0.0, 2 * np.pi, ring, endpoint=False)
    return np.concatenate([nodes, HOLE_CENTRE + HOLE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)])


def areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (points[triangles[:, k]] for k in range(3))
    return 0.5 * np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


def inside_the_hole(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[triangles].mean(axis=1) - HOLE_CENTRE, axis=1) < HOLE_RADIUS


def test_no_triangle_crosses_the_hole_and_the_plate_stays_covered():
    points = plate_with_a_hole()
    assert inside_the_hole(points, Delaunay(points).simplices).sum() > 0  # plain Delaunay fills the hole
    triangles, masked = masked_delaunay(points)
    assert masked > 0 and not inside_the_hole(points, triangles).any()
    # what is kept covers the plate up to the hole's edge: unit square minus the 32-gon lining the hole
    polygon = 0.5 * 32 * HOLE_RADIUS ** 2 * np.sin(2 * np.pi / 32)
    assert areas(points, triangles).sum() == pytest.approx(1.0 - polygon, rel=1e-9)


@pytest.mark.parametrize("aspect", [1.0, 3.0])
def test_a_convex_regular_grid_keeps_all_its_triangles(aspect):
    x, y = np.meshgrid(np.linspace(0.0, 3.0 * aspect, 13), np.linspace(0.0, 1.0, 5))
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    triangles, masked = masked_delaunay(points)
    assert masked == 0 and len(triangles) == 2 * 12 * 4
    assert areas(points, triangles).sum() == pytest.approx(3.0 * aspect)


def test_coincident_nodes_do_not_shrink_the_spacing():
    x, y = np.meshgrid(np.linspace(0.0, 1.0, 6), np.linspace(0.0, 1.0, 6))
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    tied = np.concatenate([points, points[::2]])  # every other node doubled, as on a tied interface
    triangles, masked = masked_delaunay(tied)
    assert masked == 0 and areas(tied, triangles).sum() == pytest.approx(1.0)


def test_nodes_on_one_line_cannot_be_triangulated():
    with pytest.raises(ValueError, match="cannot be triangulated: fewer than 3 distinct points or all on one line"):
        masked_delaunay(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))


def test_cells_become_triangles_and_are_cut_to_the_window():
    blocks = [("line", np.array([[0, 1]])), ("triangle", np.array([[0, 1, 2]])), ("quad", np.array([[1, 3, 4, 2]])),
              ("tetra", np.array([[0, 1, 2, 3]]))]
    assert triangles_of_cells(blocks).tolist() == [[0, 1, 2], [1, 3, 4], [1, 4, 2]]
    assert window_triangles(triangles_of_cells(blocks), 1, 5).tolist() == [[0, 2, 3], [0, 3, 1]]


def window(num_nodes: int) -> DataConfig:
    return DataConfig(num_cases=2, num_timesteps=2, num_nodes=num_nodes)


def test_the_meshs_own_triangles_win_over_delaunay(tmp_path: Path):
    points = plate_with_a_hole()
    # the mesh's own triangles: the masked Delaunay ones less one, so the test can tell them apart
    own = masked_delaunay(points)[0][1:]
    meshio.write(tmp_path / "mesh.vtu", meshio.Mesh(np.c_[points, np.zeros(len(points))], [("triangle", own)]))
    physics = PhysicsLossConfig(connectivity_path="mesh.vtu")
    found = mesh_triangles(window(len(points)), physics, points, tmp_path)
    assert np.array_equal(found.triangles, own) and found.describe().endswith("mesh.vtu")


def test_without_cells_the_coordinates_are_triangulated_and_3d_clouds_are_left_alone(tmp_path: Path):
    points = plate_with_a_hole()
    np.save(tmp_path / "edges.npy", np.array([[0, 1], [1, 2]]))
    found = mesh_triangles(window(len(points)), PhysicsLossConfig(connectivity_path="edges.npy"), points, tmp_path)
    assert not inside_the_hole(points, found.triangles).any()
    assert "Delaunay" in found.describe() and "edges.npy has no triangles or quads" in found.describe()
    assert mesh_triangles(window(len(points)), PhysicsLossConfig(), np.c_[points, points[:, 0]], tmp_path) is None
    assert mesh_triangles(window(len(points)), PhysicsLossConfig(), None, tmp_path) is None
