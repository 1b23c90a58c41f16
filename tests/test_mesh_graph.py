"""Mesh edges from cells, files (.csv, .npy, a meshio .vtu) and nearest neighbours; the node window; error texts."""
from __future__ import annotations

from pathlib import Path

import meshio
import numpy as np
import pytest

from modules.config.schema import DataConfig, PhysicsLossConfig
from modules.errors import DataError
from modules.data.mesh_graph import build_mesh_graph, cell_edges, knn_edges, read_connectivity, unique_undirected

TWO_TRIANGLES = np.array([[0, 1, 2], [1, 2, 3]])
TWO_TRIANGLE_EDGES = [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
POINTS = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def data(num_nodes: int = 4, node_start: int = 0, node_end=None) -> DataConfig:
    return DataConfig(num_cases=2, num_timesteps=3, num_nodes=num_nodes, node_start=node_start, node_end=node_end)


def graph_from(path: Path, **window):
    return build_mesh_graph(PhysicsLossConfig(spatial_weight=1.0, connectivity_path=path.name), data(**window),
                            None, path.parent)


def test_cells_become_their_sides():
    edges, loops = unique_undirected(cell_edges("triangle", TWO_TRIANGLES))
    assert edges.tolist() == TWO_TRIANGLE_EDGES and loops == 0
    quad, _ = unique_undirected(cell_edges("quad", np.array([[0, 1, 2, 3]])))
    assert quad.tolist() == [[0, 1], [0, 3], [1, 2], [2, 3]]  # no diagonals
    assert len(unique_undirected(cell_edges("tetra", np.array([[0, 1, 2, 3]])))[0]) == 6
    # a quadratic triangle: corners 0, 1, 2 joined through the mid-side nodes 3, 4, 5
    six, _ = unique_undirected(cell_edges("triangle6", np.array([[0, 1, 2, 3, 4, 5]])))
    assert six.tolist() == [[0, 3], [0, 5], [1, 3], [1, 4], [2, 4], [2, 5]]


def test_unique_undirected_orders_deduplicates_and_counts_self_loops():
    edges, loops = unique_undirected(np.array([[1, 0], [0, 1], [2, 2], [3, 1], [1, 3]]))
    assert edges.tolist() == [[0, 1], [1, 3]] and loops == 1


def test_nearest_neighbours_on_a_line_are_symmetrised():
    # gaps 1, 2, 4, 8: node 3 (x=7) counts node 1 among its two nearest, node 1 does not count node 3
    coordinates = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0], [15.0, 0.0]])
    assert knn_edges(coordinates, 1).tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert knn_edges(coordinates, 2).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3], [2, 4], [3, 4]]
    assert knn_edges(coordinates[:3], 10).tolist() == [[0, 1], [0, 2], [1, 2]]  # k capped at N - 1


def test_build_uses_nearest_neighbours_of_the_window_coordinates_without_a_file():
    coordinates = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    graph = build_mesh_graph(PhysicsLossConfig(spatial_weight=1.0, neighbours=1), data(3), coordinates, Path("."))
    assert graph.edges.tolist() == [[0, 1], [1, 2]] and "1 nearest neighbours" in graph.describe()


def test_csv_with_header_comments_duplicates_and_a_self_loop(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("i,j\n# two triangles\n0,1\n1, 2\n\n2,0\n1,3\n3,2\n2,1\n3,3\n")
    graph = graph_from(path)
    assert graph.edges.tolist() == TWO_TRIANGLE_EDGES and graph.self_loops_ignored == 1
    assert graph.describe().endswith("; 1 self-loops ignored")


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("0,1\n1,4\n")
    with pytest.raises(DataError) as error:
        read_connectivity(path, 4)
    assert str(error.value) == (f"mesh_connectivity_path {path}, line 2: node 4 is out of range; expected 0..3 "
                                "(0-based, Dim3 = 4); fix: number the nodes like the dataset's columns (subtract 1 "
                                "if the file counts from 1)")
    path.write_text("0,1\n1;2\n")
    with pytest.raises(DataError, match=r"line 2: expected two \('i,j'\), like the lines before it, "
                                        r"0-based node numbers, found '1;2'"):
        read_connectivity(path, 4)
    path.write_text("i,j,k\n0,1,2\n1,2,3\n")  # triangles: their sides
    assert read_connectivity(path, 4).shape == (6, 2)


def test_npy_round_trip_and_errors(tmp_path):
    path = tmp_path / "edges.npy"
    np.save(path, np.array([[1, 0], [2, 1], [0, 2], [3, 1], [2, 3]], dtype=np.int32))
    assert graph_from(path).edges.tolist() == TWO_TRIANGLE_EDGES
    np.save(path, TWO_TRIANGLES)  # triangles [M, 3]: their sides
    assert graph_from(path).edges.tolist() == TWO_TRIANGLE_EDGES
    np.save(path, np.array([[0, 1, 2, 3]]))
    with pytest.raises(DataError, match=r"expected an array of shape \[E, 2\] \(one node pair per row\) or \[M, 3\] "
                                        r"\(one triangle per row\), found \[1, 4\]"):
        read_connectivity(path, 4)
    np.save(path, np.array([[0.0, 1.0]]))
    with pytest.raises(DataError, match=r"expected integer node numbers, found dtype float64; fix: save it with "
                                        r"np.save\(path, cells.astype\(np.int64\)\)"):
        read_connectivity(path, 4)
    np.save(path, np.array([[0, 1], [1, 2], [-1, 2]]))
    with pytest.raises(DataError, match=r"row 2 uses nodes \[-1, 2\], but node numbers must be 0..3"):
        read_connectivity(path, 4)


def test_vtu_cells_become_edges(tmp_path):
    path = tmp_path / "mesh.vtu"
    meshio.write(path, meshio.Mesh(POINTS, [("triangle", TWO_TRIANGLES)]))
    assert graph_from(path).edges.tolist() == TWO_TRIANGLE_EDGES
    with pytest.raises(DataError, match=r"expected a mesh of 5 points \(Dim3, one per node of the sweep"):
        read_connectivity(path, 5)


def test_unreadable_and_missing_files(tmp_path):
    path = tmp_path / "edges.xyz"
    path.write_text("not a mesh")
    with pytest.raises(DataError, match="not a .npy or .csv of cells, and meshio cannot read it as a mesh"):
        read_connectivity(path, 4)
    with pytest.raises(DataError, match="missing.csv: file not found; fix the path in condition.txt"):
        read_connectivity(tmp_path / "missing.csv", 4)


def test_the_node_window_keeps_inner_edges_renumbered_from_zero(tmp_path):
    path = tmp_path / "edges.csv"
    path.write_text("\n".join(f"{i},{j}" for i, j in TWO_TRIANGLE_EDGES))
    graph = graph_from(path, node_start=1, node_end=4)
    assert graph.edges.tolist() == [[0, 1], [0, 2], [1, 2]] and graph.edges_outside_window == 2
    path.write_text("0,1\n0,2\n")
    with pytest.raises(DataError) as error:
        graph_from(path, node_start=1, node_end=4)
    assert "no edge is left that joins two nodes of the node window 1..3 (Dim3_start..Dim3_end)" in str(error.value)
    assert "0 self-loops ignored, 2 edges leave the window" in str(error.value)
