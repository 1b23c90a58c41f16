"""The projection cache: read back exactly when nothing it depends on changed, and refused otherwise."""
from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import numpy as np
import torch

from modules.config.schema import RunConfig
from modules.models.spatial_basis import SpatialModes
from modules.training.projected_training import ProjectedSweep
from modules.training.projection_cache import (CachedProjection, cache_key, cache_path, load_projection,
                                              save_projection)


def sweep_and_projection(tmp_path):
    data = tmp_path / "dataset1.npy"
    np.save(data, np.zeros((4, 3, 5), dtype=np.float32))
    scaler = SimpleNamespace(data_min=np.arange(5, dtype=np.float64), data_max=np.arange(5, dtype=np.float64) + 1)
    sweep = SimpleNamespace(path=data, scaler=scaler)
    generator = torch.Generator().manual_seed(0)
    modes = SpatialModes(torch.linalg.qr(torch.randn(5, 2, generator=generator, dtype=torch.float64))[0],
                         torch.tensor([3.0, 1.0], dtype=torch.float64), 4.5)
    projection = ProjectedSweep(torch.randn(4, 2, 3, generator=generator), torch.rand(4, dtype=torch.float64),
                                torch.rand(4, dtype=torch.float64), 0.37, 1.9, 5)
    return sweep, CachedProjection(modes, 3, projection)


def test_a_saved_projection_is_read_back_exactly_for_the_same_data_and_modes(tmp_path):
    sweep, cached = sweep_and_projection(tmp_path)
    key = cache_key(RunConfig(), sweep)
    path = cache_path(tmp_path / "run" / "SimulGen-VAE")
    assert path == tmp_path / "run" / "projection.pt"
    path.parent.mkdir()
    save_projection(path, key, sweep, cached)
    loaded, reason = load_projection(path, key, sweep, modes=cached.modes.modes.float())
    assert loaded is not None and reason == f"projection read from {path}"
    assert torch.equal(loaded.projection.coefficients, cached.projection.coefficients)
    assert torch.equal(loaded.projection.residual, cached.projection.residual)
    assert torch.equal(loaded.projection.physical_norm_sq, cached.projection.physical_norm_sq)
    assert (loaded.projection.scale, loaded.projection.physical_per_weighted, loaded.projection.num_nodes) == \
        (0.37, 1.9, 5)
    assert torch.equal(loaded.modes.modes.float(), cached.modes.modes.float()) and loaded.fitting_cases == 3
    assert torch.equal(loaded.modes.energy, cached.modes.energy) and loaded.modes.total_energy == 4.5


def test_another_data_file_window_scaler_or_basis_means_projecting_again(tmp_path):
    sweep, cached = sweep_and_projection(tmp_path)
    config = RunConfig()
    key = cache_key(config, sweep)
    path = tmp_path / "projection.pt"
    save_projection(path, key, sweep, cached)

    stat = os.stat(sweep.path)
    os.utime(sweep.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was written again
    loaded, reason = load_projection(path, cache_key(config, sweep), sweep)
    assert loaded is None and "another data file" in reason
    os.utime(sweep.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_projection(path, cache_key(config, sweep), sweep)[0] is not None

    other_window = dataclasses.replace(config, data=dataclasses.replace(config.data, node_end=3))
    loaded, reason = load_projection(path, cache_key(other_window, sweep), sweep)
    assert loaded is None and "another data window or split" in reason

    other_modes = dataclasses.replace(config, model=dataclasses.replace(config.model, spatial_modes=7))
    assert "another spatial-mode setting" in load_projection(path, cache_key(other_modes, sweep), sweep)[1]

    rescaled = SimpleNamespace(path=sweep.path, scaler=SimpleNamespace(data_min=sweep.scaler.data_min,
                                                                        data_max=sweep.scaler.data_max * 2))
    loaded, reason = load_projection(path, key, rescaled)
    assert loaded is None and "node scaler" in reason

    loaded, reason = load_projection(path, key, sweep, modes=torch.flip(cached.modes.modes, [1]))
    assert loaded is None and "other spatial modes" in reason

    assert load_projection(tmp_path / "none.pt", key, sweep)[0] is None
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    loaded, reason = load_projection(tmp_path / "broken.pt", key, sweep)
    assert loaded is None and "unreadable" in reason
