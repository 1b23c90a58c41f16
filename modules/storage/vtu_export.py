"""Predictions as ParaView time series: one .vtu per timestep (written by meshio) and a .pvd index."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from xml.sax.saxutils import quoteattr

import meshio
import numpy as np

from modules.storage.state_files import write_atomically


def mesh_cells(num_points: int, triangles: Optional[np.ndarray]) -> List[meshio.CellBlock]:
    """The mesh's triangles [M, 3] when known (data/mesh_triangles.py), else one vertex cell per node."""
    if triangles is not None:
        return [meshio.CellBlock("triangle", np.asarray(triangles, dtype=np.int64))]
    return [meshio.CellBlock("vertex", np.arange(num_points, dtype=np.int64)[:, None])]


def _per_variable(name: str, values: np.ndarray) -> Dict[str, np.ndarray]:
    """{name: [N]} for one variable; {name_variable0: [N], ...} for [N, V]."""
    if values.ndim == 1:
        return {name: values.astype(np.float32)}
    return {f"{name}_variable{variable}": values[:, variable].astype(np.float32) for variable in range(values.shape[1])}


def write_time_series(directory: Path, name: str, coordinates: np.ndarray, field: np.ndarray,
                      field_name: str = "prediction", extra: Optional[dict] = None,
                      times: Optional[Sequence[float]] = None, triangles: Optional[np.ndarray] = None) -> Path:
    """field [T, N] (and extra arrays [T, N]) on the nodes `coordinates` [N, 2 or 3], drawn on `triangles`
    [M, 3] (vertices only without) -> directory/name_tXXXX.vtu + directory/name.pvd; returns the .pvd.
    Arrays [T, N, V] of several variables become V point-data arrays '<name>_variable<v>' (v from 0)."""
    directory.mkdir(parents=True, exist_ok=True)
    points = np.zeros((len(coordinates), 3))
    points[:, : coordinates.shape[1]] = coordinates
    cells = mesh_cells(len(coordinates), triangles)
    times = list(times) if times is not None else list(range(field.shape[0]))
    entries = []
    for step in range(field.shape[0]):
        point_data = {}
        for key, values in {field_name: field, **(extra or {})}.items():
            point_data.update(_per_variable(key, values[step]))
        file_name = f"{name}_t{step:04d}.vtu"
        mesh = meshio.Mesh(points, cells, point_data=point_data)
        temporary = directory / f".{file_name}.tmp"
        meshio.write(temporary, mesh, file_format="vtu")  # meshio writes by name: rename for atomicity
        os.replace(temporary, directory / file_name)
        entries.append(f'    <DataSet timestep="{times[step]}" file={quoteattr(file_name)}/>')
    index = ('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n  <Collection>\n'
             + "\n".join(entries) + "\n  </Collection>\n</VTKFile>\n")
    return write_atomically(directory / f"{name}.pvd", lambda stream: stream.write(index), "w")
