"""Reading `mesh_connectivity_path`: the mesh's cells, as blocks of node numbers of the whole sweep.

The file is a .npy of integers, a .csv of one cell per line (two node numbers: an edge; three: a
triangle), or any mesh file meshio reads, whose cell blocks are kept as they are. Node numbers are
0-based columns of the dataset (0..Dim3-1). The spatial physics term takes the cells' sides
(mesh_graph.py); mesh maps and VTU files draw their triangles (mesh_triangles.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from modules.errors import DataError

CellBlock = Tuple[str, np.ndarray]
"""(meshio cell type, [cells, nodes per cell] int64 node numbers)."""

# Rows of two numbers are edges, of three triangles.
_TYPE_BY_WIDTH = {2: "line", 3: "triangle"}

MESH_FILE_FIX = ("save the edges [E, 2] or triangles [M, 3] as a .npy of 0-based node numbers (0..Dim3-1), a .csv "
                 "with one 'i,j' or 'i,j,k' per line, or a mesh file meshio reads whose points are the sweep's nodes")


def _read_csv_cells(path: Path, num_nodes: int) -> List[CellBlock]:
    rows: List[List[int]] = []
    first_content_line = True
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [part.strip() for part in (line.split(",") if "," in line else line.split())]
        try:
            nodes = [int(part) for part in fields]
        except ValueError:
            # A header line such as "i,j" or "source,target" is allowed once, on the first line with content.
            if first_content_line and len(fields) in _TYPE_BY_WIDTH and not any(part.lstrip("-").isdigit()
                                                                                 for part in fields):
                first_content_line = False
                continue
            nodes = []
        width = len(rows[0]) if rows else None
        if len(nodes) not in _TYPE_BY_WIDTH or (width is not None and len(nodes) != width):
            expected = {None: "two (an edge 'i,j') or three (a triangle 'i,j,k')", 2: "two ('i,j'), like the lines "
                        "before it,", 3: "three ('i,j,k'), like the lines before it,"}[width]
            raise DataError(f"mesh_connectivity_path {path}, line {number}: expected {expected} 0-based node "
                            f"numbers, found '{line}'; fix: write one cell per line as integers separated by "
                            f"commas") from None
        first_content_line = False
        for node in nodes:
            if not 0 <= node < num_nodes:
                raise DataError(f"mesh_connectivity_path {path}, line {number}: node {node} is out of range; "
                                f"expected 0..{num_nodes - 1} (0-based, Dim3 = {num_nodes}); fix: number the nodes "
                                f"like the dataset's columns (subtract 1 if the file counts from 1)")
        rows.append(nodes)
    width = len(rows[0]) if rows else 2
    return [(_TYPE_BY_WIDTH[width], np.array(rows, dtype=np.int64).reshape(-1, width))]


def _read_npy_cells(path: Path, num_nodes: int) -> List[CellBlock]:
    cells = np.load(path, allow_pickle=False)
    if cells.ndim != 2 or cells.shape[1] not in _TYPE_BY_WIDTH:
        raise DataError(f"mesh_connectivity_path {path}: expected an array of shape [E, 2] (one node pair per "
                        f"row) or [M, 3] (one triangle per row), found {list(cells.shape)}; fix: {MESH_FILE_FIX}")
    if cells.dtype.kind not in "iu":
        raise DataError(f"mesh_connectivity_path {path}: expected integer node numbers, found dtype {cells.dtype}; "
                        f"fix: save it with np.save(path, cells.astype(np.int64))")
    cells = cells.astype(np.int64)
    bad = np.flatnonzero(((cells < 0) | (cells >= num_nodes)).any(axis=1))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"mesh_connectivity_path {path}: row {row} uses nodes {cells[row].tolist()}, but node "
                        f"numbers must be 0..{num_nodes - 1} (0-based, Dim3 = {num_nodes}); {len(bad)} rows are out "
                        f"of range; fix: number the nodes like the dataset's columns (subtract 1 if the file counts "
                        f"from 1)")
    return [(_TYPE_BY_WIDTH[cells.shape[1]], cells)]


def _read_mesh_file_cells(path: Path, num_nodes: int) -> List[CellBlock]:
    import meshio

    try:
        mesh = meshio.read(path)
    except (meshio.ReadError, ValueError, KeyError) as error:
        raise DataError(f"mesh_connectivity_path {path}: not a .npy or .csv of cells, and meshio cannot read "
                        f"it as a mesh ({error}); fix: {MESH_FILE_FIX}") from None
    if len(mesh.points) != num_nodes:
        raise DataError(f"mesh_connectivity_path {path}: expected a mesh of {num_nodes} points (Dim3, one per "
                        f"node of the sweep, in the dataset's order), found {len(mesh.points)}; fix: export the "
                        f"mesh the sweep was sampled on")
    blocks = [(block.type, np.asarray(block.data, dtype=np.int64)) for block in mesh.cells]
    for _, cells in blocks:
        if cells.size and (cells.min() < 0 or cells.max() >= num_nodes):
            raise DataError(f"mesh_connectivity_path {path}: a cell uses node {int(cells.max())}, but the mesh has "
                            f"points 0..{num_nodes - 1}; fix: repair or re-export the mesh")
    return blocks


def read_mesh_cells(path: Path, num_nodes: int) -> List[CellBlock]:
    """The cell blocks of `path` (.npy, .csv or a mesh file meshio reads), 0-based node numbers of the whole sweep."""
    if not path.is_file():
        raise DataError(f"mesh_connectivity_path {path}: file not found; fix the path in condition.txt "
                        f"(relative paths start in the working directory) or remove the line")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy_cells(path, num_nodes)
    if suffix in (".csv", ".txt"):
        return _read_csv_cells(path, num_nodes)
    return _read_mesh_file_cells(path, num_nodes)
