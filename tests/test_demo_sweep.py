import csv
import math
import os

import numpy as np
import pytest
from PIL import Image

from modules.data.demo_sweep import (
    PARAMETER_NAMES,
    DemoSweepSpec,
    ensure_demo_sweep,
    latin_hypercube,
    simulate_sweep,
    write_demo_sweep,
)
from modules.errors import ConfigError, DataError

SMALL = DemoSweepSpec(num_cases=6, grid_size=12, num_timesteps=8, seed=3)


@pytest.fixture(scope="module")
def small_sweep():
    return simulate_sweep(SMALL)


def interior_energy(fields, spec):
    """Heat stored above the edge temperature, J, per case and output time."""
    rise = fields.astype(np.float64) - spec.edge_temperature_c
    return rise.sum(axis=2) * spec.volumetric_heat_capacity * spec.plate_thickness_m * spec.node_spacing_m ** 2


def ftcs_reference(parameters, spec, steps_per_output):
    """Plain explicit FTCS solution of the same problem, with a tiny time step, as an independent check."""
    grid, dx = spec.grid_size, spec.node_spacing_m
    nodes = np.arange(grid) * dx
    angle = np.deg2rad(parameters[:, 2])
    velocity = spec.source_travel_m / spec.duration_s * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    dt = spec.duration_s / spec.num_timesteps / steps_per_output
    ratio = (parameters[:, 4] * dt / dx ** 2)[:, None, None]
    assert ratio.max() <= 0.25
    heat = (parameters[:, 3] * dt / (spec.volumetric_heat_capacity * spec.plate_thickness_m))[:, None, None]
    temperature = np.full((len(parameters), grid, grid), spec.edge_temperature_c)
    out = []
    for step in range(spec.num_timesteps * steps_per_output):
        centre = parameters[:, :2] + (step + 0.5) * dt * velocity

        def spot(axis):
            g = np.exp(-0.5 * ((nodes[None] - centre[:, axis, None]) / spec.source_radius_m) ** 2)
            return g / (g.sum(1, keepdims=True) * dx)

        t = temperature
        lap = t[:, :-2, 1:-1] + t[:, 2:, 1:-1] + t[:, 1:-1, :-2] + t[:, 1:-1, 2:] - 4 * t[:, 1:-1, 1:-1]
        t[:, 1:-1, 1:-1] += ratio * lap + heat * spot(1)[:, 1:-1, None] * spot(0)[:, None, 1:-1]
        if (step + 1) % steps_per_output == 0:
            out.append(t.reshape(len(parameters), -1).copy())
    return np.stack(out, axis=1)


def test_shapes_dtypes_and_ranges(small_sweep):
    s = small_sweep
    assert s.fields.shape == (6, 8, 144) and s.fields.dtype == np.float32
    assert s.parameters.shape == (6, 5) and s.parameters.dtype == np.float64
    assert s.parameter_names == PARAMETER_NAMES and len(s.parameter_names) == 5
    assert s.coordinates.shape == (144, 2) and s.coordinates.dtype == np.float64
    assert s.images.shape == (6, 64, 64) and s.images.dtype == np.uint8
    np.testing.assert_allclose(s.output_times_s, np.arange(1, 9) * 7.5)
    assert np.isfinite(s.fields).all()
    low = [0.03, 0.03, 0.0, 2.0, 1e-5]
    high = [0.07, 0.07, 180.0, 20.0, 6e-5]
    assert (s.parameters >= low).all() and (s.parameters <= high).all()


def test_coordinates_are_row_major_and_edges_stay_fixed(small_sweep):
    dx = 0.1 / 11
    coords = small_sweep.coordinates
    np.testing.assert_allclose(coords[0], [0.0, 0.0])
    np.testing.assert_allclose(coords[1], [dx, 0.0])  # next node along x
    np.testing.assert_allclose(coords[12], [0.0, dx])  # next row: y
    np.testing.assert_allclose(coords[-1], [0.1, 0.1])
    plate = small_sweep.fields.reshape(6, 8, 12, 12)
    for edge in (plate[..., 0, :], plate[..., -1, :], plate[..., :, 0], plate[..., :, -1]):
        assert np.all(edge == 20.0)


def test_latin_hypercube_puts_one_sample_per_stratum():
    unit = latin_hypercube(10, 5, np.random.default_rng(1))
    for column in unit.T:
        assert sorted(np.floor(column * 10).astype(int)) == list(range(10))


def test_same_seed_is_identical_and_cases_differ(small_sweep):
    again = simulate_sweep(SMALL)
    for name in ("fields", "parameters", "coordinates", "images"):
        assert np.array_equal(getattr(again, name), getattr(small_sweep, name))
    other = simulate_sweep(DemoSweepSpec(num_cases=6, grid_size=12, num_timesteps=8, seed=4))
    assert not np.allclose(other.parameters, small_sweep.parameters)
    flat = small_sweep.fields.reshape(6, -1)
    for i in range(6):
        for j in range(i + 1, 6):
            assert np.abs(flat[i] - flat[j]).max() > 1.0
            assert not np.array_equal(small_sweep.images[i], small_sweep.images[j])


def test_without_source_the_plate_cools_monotonically_at_the_slowest_mode_rate():
    alpha = 6e-5
    spec = DemoSweepSpec(num_cases=4, grid_size=12, num_timesteps=8, power_range_w=(0.0, 0.0),
                         initial_temperature_c=60.0, diffusivity_range_m2_s=(alpha, alpha))
    fields = simulate_sweep(spec).fields
    assert np.all(np.diff(fields, axis=1) <= 1e-4)  # every node non-increasing
    assert fields.min() >= 20.0 - 1e-4 and fields.max() <= 60.0
    energy = interior_energy(fields, spec)
    assert np.all(np.diff(energy, axis=1) < 0)
    # Late on only the (1, 1) mode is left; its discrete decay rate is 2 * 4 sin^2(pi / 22) / dx^2.
    dx = 0.1 / 11
    rate = alpha * 2 * 4 * math.sin(math.pi / 22) ** 2 / dx ** 2
    np.testing.assert_allclose(energy[:, -1] / energy[:, -2], math.exp(-rate * 7.5), rtol=1e-4)


def test_with_a_centred_source_stored_heat_rises_and_matches_the_power_early():
    spec = DemoSweepSpec(num_cases=3, grid_size=12, num_timesteps=8, power_range_w=(10.0, 10.0),
                         start_x_range_m=(0.05, 0.05), start_y_range_m=(0.05, 0.05),
                         diffusivity_range_m2_s=(1e-5, 1e-5))
    fields = simulate_sweep(spec).fields
    energy = interior_energy(fields, spec)
    assert np.all(np.diff(energy[:, :4], axis=1) > 0)
    injected = 10.0 * 7.5  # W * s until the first output
    # Only the edges can take heat away, and at this low diffusivity little has reached them yet.
    assert np.all(energy[:, 0] <= injected * (1 + 1e-5))
    assert np.all(energy[:, 0] >= 0.99 * injected)


def test_matches_an_independent_fine_step_ftcs_solution(small_sweep):
    reference = ftcs_reference(small_sweep.parameters, SMALL, steps_per_output=400)
    rise = reference.max() - 20.0
    assert rise > 5.0
    assert np.abs(small_sweep.fields - reference).max() < 0.01 * rise


def test_more_power_makes_the_plate_hotter():
    base = dict(num_cases=2, grid_size=12, num_timesteps=8, start_x_range_m=(0.05, 0.05),
                start_y_range_m=(0.05, 0.05), direction_range_deg=(90.0, 90.0),
                diffusivity_range_m2_s=(3e-5, 3e-5))
    weak = simulate_sweep(DemoSweepSpec(power_range_w=(5.0, 5.0), **base)).fields
    strong = simulate_sweep(DemoSweepSpec(power_range_w=(10.0, 10.0), **base)).fields
    # Linear in the power: twice the power, twice the rise.
    np.testing.assert_allclose(strong - 20.0, 2 * (weak - 20.0), atol=1e-3)


def test_images_encode_start_power_and_diffusivity(small_sweep):
    s = small_sweep
    pixel = 0.1 / 64
    unit_power = (s.parameters[:, 3] - 2.0) / 18.0
    unit_diffusivity = np.log(s.parameters[:, 4] / 1e-5) / np.log(6.0)
    angle = np.deg2rad(s.parameters[:, 2])
    for case in range(6):
        image = s.images[case]
        # Background: the directions all point to +y and start at y >= 0.03 m, so row 0 is background.
        assert image[0, 0] == round(20 + 80 * unit_diffusivity[case])
        # The path, 2/3 of the way along (clear of the start disc), has the power grey level.
        x0, y0 = s.parameters[case, :2]
        x = x0 + 0.02 * math.cos(angle[case])
        y = y0 + 0.02 * math.sin(angle[case])
        row, column = min(int(y / pixel), 63), min(int(x / pixel), 63)
        assert image[row, column] == round(120 + 110 * unit_power[case])
        # The start disc is the only full-white region; its centroid is the start point.
        rows, columns = np.nonzero(image == 255)
        assert abs((columns.mean() + 0.5) * pixel - x0) < 0.5 * pixel
        assert abs((rows.mean() + 0.5) * pixel - y0) < 0.5 * pixel
    order = np.argsort(s.parameters[:, 3])
    path_levels = [round(120 + 110 * unit_power[c]) for c in order]
    assert path_levels == sorted(path_levels)


def read_params(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_write_round_trips_and_ensure_does_not_rewrite(tmp_path, small_sweep):
    paths = write_demo_sweep(small_sweep, tmp_path)
    assert set(paths) == {"dataset", "params", "images_dir", "coordinates"}
    assert np.array_equal(np.load(paths["dataset"]), small_sweep.fields)
    assert np.array_equal(np.load(paths["coordinates"]), small_sweep.coordinates)
    header, values = read_params(paths["params"])
    assert tuple(header) == PARAMETER_NAMES
    assert np.array_equal(values, small_sweep.parameters)
    names = sorted(os.listdir(paths["images_dir"]))
    assert names == [f"case_{i:04d}.png" for i in range(1, 7)]
    for index, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(paths["images_dir"] / name)), small_sweep.images[index])
    files = [paths["dataset"], paths["params"], paths["coordinates"], paths["images_dir"] / names[0]]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    assert ensure_demo_sweep(tmp_path, SMALL) == paths
    assert write_demo_sweep(small_sweep, tmp_path) == paths  # identical content: kept as is
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_ensure_writes_a_missing_sweep(tmp_path, small_sweep):
    paths = ensure_demo_sweep(tmp_path / "demo", SMALL)
    assert np.array_equal(np.load(paths["dataset"]), small_sweep.fields)
    assert len(os.listdir(paths["images_dir"])) == 6


def test_refuses_to_overwrite_a_different_file(tmp_path):
    foreign = tmp_path / "dataset1.npy"
    np.save(foreign, np.zeros(3))
    before = foreign.read_bytes()
    with pytest.raises(DataError) as caught:
        ensure_demo_sweep(tmp_path, SMALL)
    assert str(foreign) in str(caught.value)
    assert "will not overwrite it; move or rename it" in str(caught.value)
    assert foreign.read_bytes() == before


def test_refuses_stray_images_and_a_mismatched_existing_sweep(tmp_path, small_sweep):
    write_demo_sweep(small_sweep, tmp_path)
    with pytest.raises(DataError, match="shape \\(6, 8, 144\\), but the demo sweep asked for \\(6, 8, 256\\)"):
        ensure_demo_sweep(tmp_path, DemoSweepSpec(num_cases=6, grid_size=16, num_timesteps=8, seed=3))
    Image.fromarray(small_sweep.images[0]).save(tmp_path / "images" / "case_0007.png")
    with pytest.raises(DataError, match="1 PNG file\\(s\\) that are not part of this 6-case sweep \\(e.g. case_0007.png\\)"):
        write_demo_sweep(small_sweep, tmp_path)


def test_invalid_spec_reports_every_problem():
    with pytest.raises(ConfigError) as caught:
        DemoSweepSpec(grid_size=2, power_range_w=(5.0, 1.0), start_x_range_m=(0.01, 0.07))
    text = str(caught.value)
    assert text.startswith("3 configuration problems found:")
    assert "key 'grid_size': must be at least 3, got 2" in text
    assert "key 'power_range_w': must be (low, high) with low <= high, got (5.0, 1.0)" in text
    assert "key 'start_x_range_m': start range (0.01, 0.07)" in text
