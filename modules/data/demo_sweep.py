"""The built-in demo sweep: transient heat conduction in a square plate under a moving heat source.

Physics. A thin square plate (side `plate_size_m`, thickness `plate_thickness_m`) starts at
`initial_temperature_c`; its four edges are held at `edge_temperature_c` (fixed-temperature,
Dirichlet edges). A Gaussian heat spot of radius `source_radius_m` and power P travels in a straight
line at constant speed, `source_travel_m` in `duration_s`. The temperature obeys

    dT/dt = alpha * (d2T/dx2 + d2T/dy2) + P * g(x - xs(t), y - ys(t)) / (rho_c * thickness)

with g the spot shape (1/m^2, integrating to one). Space: 5-point finite differences on a
grid_size x grid_size node grid that includes the edge nodes. Time: that 5-point Laplacian with
fixed edges is diagonal in the discrete sine basis, so every mode is advanced exactly over each
sub-step (an exponential integrator: unconditionally stable, no dt limit from the diffusivity), with
the source held at its mid-step position. Being the exact flow of the finite-difference system, it
keeps that system's maximum principle: with no source the plate cools monotonically toward the
edge temperature. It agrees with a fine-step explicit FTCS run to about 0.2 % (see the tests) and
is several times faster, since sub-steps need only follow the moving source.

Each case is one design of five parameters, drawn with a seeded Latin hypercube: source start x and
y (m), direction of travel (degrees from +x toward +y), power (W) and diffusivity (m^2/s,
log-uniform). Fields are stored at `num_timesteps` evenly spaced times t_k = (k + 1) * duration /
num_timesteps (the uniform initial state is left out: it is the same for every case). Node n is
grid point (row iy, column ix) with n = iy * grid_size + ix, at x = ix * dx, y = iy * dx.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from PIL import Image
from scipy.stats import qmc

from modules.storage.atomic_files import replace_atomically
from modules.errors import ConfigError, ConfigIssue, DataError

PARAMETER_NAMES = (
    "source_start_x_m",
    "source_start_y_m",
    "source_direction_deg",
    "source_power_w",
    "diffusivity_m2_s",
)

DATASET_FILE = "dataset1.npy"
PARAMS_FILE = "params.csv"
COORDINATES_FILE = "coordinates.npy"
IMAGES_DIR = "images"

# Image grey levels. The start marker is brighter than any path so the direction of travel
# can be read from the picture; background and path ranges do not overlap.
BACKGROUND_LEVELS = (20.0, 100.0)
PATH_LEVELS = (120.0, 230.0)
START_MARKER_LEVEL = 255.0
PATH_HALF_WIDTH_PX = 1.5
# The source is held still within a sub-step; moving it at most this share of min(dx, radius)
# per sub-step keeps that error far below the spread of the spot itself.
SOURCE_SHIFT_PER_SUBSTEP = 0.1
START_MARKER_RADIUS_PX = 3.0


@dataclass(frozen=True)
class DemoSweepSpec:
    """Size, seed and physical settings of the demo sweep."""

    num_cases: int = 160
    """Designs in the sweep."""
    grid_size: int = 32
    """Nodes along each side of the plate, edges included (num_nodes = grid_size**2)."""
    num_timesteps: int = 40
    """Output times stored per case, evenly spaced over duration_s."""
    seed: int = 0
    """Seed of the Latin-hypercube design."""
    plate_size_m: float = 0.1
    """Side length of the square plate."""
    plate_thickness_m: float = 0.002
    """Plate thickness; the source power is spread over it."""
    volumetric_heat_capacity: float = 2.4e6
    """rho * c in J/(m^3 K) (aluminium-like); conductivity is diffusivity times this."""
    edge_temperature_c: float = 20.0
    """Temperature held on all four edges."""
    initial_temperature_c: float = 20.0
    """Uniform plate temperature at t = 0."""
    duration_s: float = 60.0
    """Simulated time; the last stored field is at this time."""
    source_radius_m: float = 0.005
    """Standard deviation of the Gaussian heat spot."""
    source_travel_m: float = 0.03
    """Distance the source moves in duration_s (constant speed)."""
    start_x_range_m: Tuple[float, float] = (0.03, 0.07)
    """Range of the source start x."""
    start_y_range_m: Tuple[float, float] = (0.03, 0.07)
    """Range of the source start y."""
    direction_range_deg: Tuple[float, float] = (0.0, 180.0)
    """Range of the travel direction; a half circle keeps the parameter free of the 0/360 wrap."""
    power_range_w: Tuple[float, float] = (2.0, 20.0)
    """Range of the source power."""
    diffusivity_range_m2_s: Tuple[float, float] = (1e-5, 6e-5)
    """Range of the thermal diffusivity, sampled log-uniformly (steel-like to aluminium-like)."""
    image_size: int = 64
    """Side of the square design pictures in pixels."""

    def __post_init__(self) -> None:
        issues = self.problems()
        if issues:
            raise ConfigError(issues)

    def problems(self) -> List[ConfigIssue]:
        issues: List[ConfigIssue] = []
        for name, minimum in (("num_cases", 1), ("grid_size", 3), ("num_timesteps", 1), ("image_size", 8)):
            if getattr(self, name) < minimum:
                issues.append(ConfigIssue(f"must be at least {minimum}, got {getattr(self, name)}",
                                          f"set {name} to {minimum} or more", key=name))
        for name in ("plate_size_m", "plate_thickness_m", "volumetric_heat_capacity", "duration_s",
                     "source_radius_m"):
            if not getattr(self, name) > 0:
                issues.append(ConfigIssue(f"must be positive, got {getattr(self, name)}",
                                          "use a positive value", key=name))
        if self.source_travel_m < 0:
            issues.append(ConfigIssue(f"must be >= 0, got {self.source_travel_m}", "use e.g. 0.03",
                                      key="source_travel_m"))
        for name in ("start_x_range_m", "start_y_range_m", "direction_range_deg", "power_range_w",
                     "diffusivity_range_m2_s"):
            low, high = getattr(self, name)
            if not low <= high:
                issues.append(ConfigIssue(f"must be (low, high) with low <= high, got ({low}, {high})",
                                          "swap the two values", key=name))
        if self.power_range_w[0] < 0:
            issues.append(ConfigIssue(f"power must be >= 0, got {self.power_range_w[0]}",
                                      "use e.g. (2.0, 20.0)", key="power_range_w"))
        if not self.diffusivity_range_m2_s[0] > 0:
            issues.append(ConfigIssue(f"diffusivity must be positive, got {self.diffusivity_range_m2_s[0]}",
                                      "use e.g. (1e-5, 6e-5)", key="diffusivity_range_m2_s"))
        # The spot must stay on the plate for any direction, or its power could not be
        # normalised over the plate's nodes.
        for name in ("start_x_range_m", "start_y_range_m"):
            low, high = getattr(self, name)
            if low - self.source_travel_m < 0 or high + self.source_travel_m > self.plate_size_m:
                issues.append(ConfigIssue(
                    f"start range ({low}, {high}) plus or minus source_travel_m ({self.source_travel_m}) "
                    f"leaves the plate [0, {self.plate_size_m}]",
                    f"keep the range within [{self.source_travel_m}, {self.plate_size_m - self.source_travel_m}]",
                    key=name))
        return issues

    @property
    def num_nodes(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def node_spacing_m(self) -> float:
        return self.plate_size_m / (self.grid_size - 1)


@dataclass(frozen=True)
class DemoSweep:
    """One simulated sweep, ready to write."""

    fields: np.ndarray
    """float32 [num_cases, num_timesteps, num_nodes]: temperature in deg C."""
    parameters: np.ndarray
    """float64 [num_cases, 5]: the design of each case, columns as parameter_names."""
    parameter_names: Tuple[str, ...]
    """Names (with units) of the five parameters."""
    coordinates: np.ndarray
    """float64 [num_nodes, 2]: (x, y) of each node in metres."""
    images: np.ndarray
    """uint8 [num_cases, image_size, image_size]: picture of each design; row = y, column = x, like
    fields[c, t].reshape(grid_size, grid_size)."""
    output_times_s: np.ndarray
    """float64 [num_timesteps]: time of each stored field."""


def latin_hypercube(num_samples: int, num_dims: int, rng: np.random.Generator) -> np.ndarray:
    """[num_samples, num_dims] in [0, 1): exactly one sample in each of num_samples strata per dimension
    (scipy's Latin hypercube, each sample placed at random within its stratum)."""
    return qmc.LatinHypercube(d=num_dims, seed=rng).random(num_samples)


def _unit_to_range(unit: np.ndarray, bounds: Tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return low + unit * (high - low)


def sample_parameters(spec: DemoSweepSpec) -> np.ndarray:
    """[num_cases, 5] designs in physical units, columns as PARAMETER_NAMES."""
    unit = latin_hypercube(spec.num_cases, len(PARAMETER_NAMES), np.random.default_rng(spec.seed))
    log_low, log_high = np.log(spec.diffusivity_range_m2_s)
    return np.stack([
        _unit_to_range(unit[:, 0], spec.start_x_range_m),
        _unit_to_range(unit[:, 1], spec.start_y_range_m),
        _unit_to_range(unit[:, 2], spec.direction_range_deg),
        _unit_to_range(unit[:, 3], spec.power_range_w),
        np.exp(_unit_to_range(unit[:, 4], (log_low, log_high))),
    ], axis=1)


def source_path(parameters: np.ndarray, spec: DemoSweepSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Start and end points of each source path, each [num_cases, 2] in metres."""
    start = parameters[:, 0:2]
    angle = np.deg2rad(parameters[:, 2])
    end = start + spec.source_travel_m * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return start, end


def _spot_profile(node_positions: np.ndarray, centres: np.ndarray, radius: float, spacing: float) -> np.ndarray:
    """[num_cases, grid_size] 1-D Gaussian sampled at the nodes, scaled so sum * spacing == 1.

    Normalising on the nodes (not analytically) makes the injected power exactly P on any grid.
    """
    profile = np.exp(-0.5 * ((node_positions[None, :] - centres[:, None]) / radius) ** 2)
    return profile / (profile.sum(axis=1, keepdims=True) * spacing)


def sine_basis(grid_size: int, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    """Orthonormal eigenvectors [m, m] (symmetric, its own inverse) and eigenvalues [m] of the 1-D
    second difference with zero end values, m = grid_size - 2 interior nodes."""
    intervals = grid_size - 1
    mode = np.arange(1, intervals)
    basis = np.sqrt(2.0 / intervals) * np.sin(np.pi * np.outer(mode, mode) / intervals)
    eigenvalues = -4.0 * np.sin(0.5 * np.pi * mode / intervals) ** 2 / spacing ** 2
    return basis, eigenvalues


def simulate_fields(parameters: np.ndarray, spec: DemoSweepSpec) -> Tuple[np.ndarray, np.ndarray]:
    """Run all cases at once; returns (fields float32 [cases, num_timesteps, num_nodes], output times).

    The 5-point Laplacian with fixed edges is diagonal in the discrete sine basis, so each mode of
    the rise above the edge temperature is advanced exactly over a sub-step (exponential
    integrator, unconditionally stable) with the source held at its mid-step position. Sub-steps
    are only as short as the moving source needs: it moves at most a tenth of min(dx, radius).
    """
    num_cases = parameters.shape[0]
    grid = spec.grid_size
    spacing = spec.node_spacing_m
    node_positions = np.arange(grid) * spacing
    start, end = source_path(parameters, spec)
    power = parameters[:, 3]
    diffusivity = parameters[:, 4]

    output_interval = spec.duration_s / spec.num_timesteps
    travel_per_output = spec.source_travel_m / spec.num_timesteps
    max_shift = SOURCE_SHIFT_PER_SUBSTEP * min(spacing, spec.source_radius_m)
    substeps_per_output = max(1, math.ceil(travel_per_output / max_shift))
    substep = output_interval / substeps_per_output

    basis, eigenvalues_1d = sine_basis(grid, spacing)
    rates = diffusivity[:, None, None] * (eigenvalues_1d[:, None] + eigenvalues_1d[None, :])[None]
    decay = np.exp(rates * substep)
    # (exp(rate h) - 1) / rate: the exact response of a mode to a source held for one sub-step.
    source_gain = np.expm1(rates * substep) / rates
    heating_rate = power / (spec.volumetric_heat_capacity * spec.plate_thickness_m)

    interior_count = grid - 2
    initial_rise = np.full((interior_count, interior_count), spec.initial_temperature_c - spec.edge_temperature_c)
    modal_rise = np.broadcast_to(basis @ initial_rise @ basis, decay.shape).copy()
    # Preallocated work arrays: fresh megabyte-sized temporaries every sub-step cost more than the maths.
    work = np.empty_like(modal_rise)
    rise = np.empty_like(modal_rise)
    temperature = np.full((num_cases, grid, grid), spec.edge_temperature_c, dtype=np.float64)
    fields = np.empty((num_cases, spec.num_timesteps, grid * grid), dtype=np.float32)

    for output_index in range(spec.num_timesteps):
        for sub_index in range(substeps_per_output):
            time = (output_index * substeps_per_output + sub_index + 0.5) * substep
            centre = start + (time / spec.duration_s) * (end - start)
            # Heat falling on edge nodes is absorbed by the fixed-temperature edge (hence [1:-1]).
            profile_x = _spot_profile(node_positions, centre[:, 0], spec.source_radius_m, spacing)[:, 1:-1]
            profile_y = _spot_profile(node_positions, centre[:, 1], spec.source_radius_m, spacing)[:, 1:-1]
            modal_x = profile_x @ basis
            modal_y = heating_rate[:, None] * (profile_y @ basis)
            np.multiply(modal_y[:, :, None], modal_x[:, None, :], out=work)
            np.multiply(work, source_gain, out=work)
            np.multiply(modal_rise, decay, out=modal_rise)
            np.add(modal_rise, work, out=modal_rise)
        np.matmul(modal_rise, basis, out=work)
        np.matmul(basis, work, out=rise)
        temperature[:, 1:-1, 1:-1] = rise
        temperature[:, 1:-1, 1:-1] += spec.edge_temperature_c
        fields[:, output_index, :] = temperature.reshape(num_cases, grid * grid)
    output_times = (np.arange(spec.num_timesteps) + 1) * output_interval
    return fields, output_times


def node_coordinates(spec: DemoSweepSpec) -> np.ndarray:
    """[num_nodes, 2] (x, y) in metres, row-major: node = iy * grid_size + ix."""
    positions = np.arange(spec.grid_size) * spec.node_spacing_m
    y, x = np.meshgrid(positions, positions, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def _unit_position(values: np.ndarray, bounds: Tuple[float, float]) -> np.ndarray:
    low, high = bounds
    if high == low:
        return np.full_like(values, 0.5)
    return (values - low) / (high - low)


def render_images(parameters: np.ndarray, spec: DemoSweepSpec) -> np.ndarray:
    """uint8 [num_cases, S, S] pictures from which all five parameters can be read back.

    Background grey: log diffusivity within its range. Path (start to end, anti-aliased line):
    power within its range. Bright disc: the start point, which fixes the direction of travel.
    """
    size = spec.image_size
    pixel_m = spec.plate_size_m / size
    centres = (np.arange(size) + 0.5) * pixel_m
    pixel_x = centres[None, None, :]  # image column = x
    pixel_y = centres[None, :, None]  # image row = y

    start, end = source_path(parameters, spec)
    start_x, start_y = start[:, 0, None, None], start[:, 1, None, None]
    step_x, step_y = (end - start)[:, 0, None, None], (end - start)[:, 1, None, None]
    length_sq = np.maximum(step_x ** 2 + step_y ** 2, 1e-30)
    along = np.clip(((pixel_x - start_x) * step_x + (pixel_y - start_y) * step_y) / length_sq, 0.0, 1.0)
    path_distance_px = np.hypot(pixel_x - start_x - along * step_x, pixel_y - start_y - along * step_y) / pixel_m
    start_distance_px = np.hypot(pixel_x - start_x, pixel_y - start_y) / pixel_m

    log_bounds = tuple(np.log(spec.diffusivity_range_m2_s))
    background = _unit_to_range(_unit_position(np.log(parameters[:, 4]), log_bounds), BACKGROUND_LEVELS)
    path = _unit_to_range(_unit_position(parameters[:, 3], spec.power_range_w), PATH_LEVELS)
    image = np.broadcast_to(background[:, None, None], path_distance_px.shape).copy()
    path_cover = np.clip(PATH_HALF_WIDTH_PX + 0.5 - path_distance_px, 0.0, 1.0)
    image += path_cover * (path[:, None, None] - image)
    start_cover = np.clip(START_MARKER_RADIUS_PX + 0.5 - start_distance_px, 0.0, 1.0)
    image += start_cover * (START_MARKER_LEVEL - image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def simulate_sweep(spec: DemoSweepSpec) -> DemoSweep:
    """Sample the designs, solve every case and draw every design. Pure: no files, no prints."""
    parameters = sample_parameters(spec)
    fields, output_times = simulate_fields(parameters, spec)
    return DemoSweep(
        fields=fields,
        parameters=parameters,
        parameter_names=PARAMETER_NAMES,
        coordinates=node_coordinates(spec),
        images=render_images(parameters, spec),
        output_times_s=output_times,
    )


PathLike = Union[str, os.PathLike]


def image_file_name(case_index: int, num_cases: int) -> str:
    """case_0001.png for case_index 0; zero padded so names sort in case order."""
    return f"case_{case_index + 1:0{max(4, len(str(num_cases)))}d}.png"


def demo_paths(directory: PathLike) -> Dict[str, Path]:
    root = Path(directory)
    return {
        "dataset": root / DATASET_FILE,
        "params": root / PARAMS_FILE,
        "images_dir": root / IMAGES_DIR,
        "coordinates": root / COORDINATES_FILE,
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _csv_bytes(names: Tuple[str, ...], parameters: np.ndarray) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in parameters:
        writer.writerow([repr(float(value)) for value in row])
    return buffer.getvalue().encode("utf-8")


def _same_png_pixels(path: Path, image: np.ndarray) -> bool:
    # A different Pillow version may encode the same pixels to different bytes.
    try:
        with Image.open(path) as existing:
            return existing.mode == "L" and np.array_equal(np.asarray(existing), image)
    except OSError:
        return False


def _write_new(path: Path, payload: bytes, image: Union[np.ndarray, None] = None) -> None:
    """Write payload to path via temp file + os.replace; an identical file is left untouched."""
    if path.exists():
        if path.read_bytes() == payload or (image is not None and _same_png_pixels(path, image)):
            return
        raise DataError(
            f"{path}: a different file is already there and the demo sweep will not overwrite it; "
            f"move or rename it (or choose another directory), then run again")
    replace_atomically(path, lambda handle: handle.write(payload))


def write_demo_sweep(sweep: DemoSweep, directory: PathLike) -> Dict[str, Path]:
    """Write dataset1.npy, params.csv, coordinates.npy and images/case_NNNN.png into directory.

    Files that already hold exactly this content are kept; any other existing file raises DataError.
    Returns {"dataset", "params", "images_dir", "coordinates"} paths.
    """
    paths = demo_paths(directory)
    num_cases = sweep.fields.shape[0]
    image_names = [image_file_name(index, num_cases) for index in range(num_cases)]
    paths["images_dir"].mkdir(parents=True, exist_ok=True)
    # Extra pictures would be read as extra designs by the image conditioner.
    strangers = sorted(p.name for p in paths["images_dir"].glob("*.png") if p.name not in set(image_names))
    if strangers:
        raise DataError(
            f"{paths['images_dir']}: holds {len(strangers)} PNG file(s) that are not part of this "
            f"{num_cases}-case sweep (e.g. {strangers[0]}); move them elsewhere, then run again")
    _write_new(paths["dataset"], _npy_bytes(np.ascontiguousarray(sweep.fields, dtype=np.float32)))
    _write_new(paths["coordinates"], _npy_bytes(np.ascontiguousarray(sweep.coordinates, dtype=np.float64)))
    _write_new(paths["params"], _csv_bytes(sweep.parameter_names, sweep.parameters))
    for name, image in zip(image_names, sweep.images):
        _write_new(paths["images_dir"] / name, _png_bytes(image), image=image)
    return paths


def _existing_dataset_shape(path: Path) -> Tuple[int, ...]:
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot be read as a .npy array ({error}); move it away so the demo "
                        f"sweep can be written there") from error


def ensure_demo_sweep(directory: PathLike, spec: DemoSweepSpec = DemoSweepSpec()) -> Dict[str, Path]:
    """Return the demo sweep's paths in directory, simulating and writing it first if any file is missing."""
    paths = demo_paths(directory)
    image_paths = [paths["images_dir"] / image_file_name(i, spec.num_cases) for i in range(spec.num_cases)]
    complete = all(paths[key].is_file() for key in ("dataset", "params", "coordinates")) and all(
        p.is_file() for p in image_paths)
    if complete:
        expected = (spec.num_cases, spec.num_timesteps, spec.num_nodes)
        found = _existing_dataset_shape(paths["dataset"])
        if found != expected:
            raise DataError(
                f"{paths['dataset']}: holds an array of shape {found}, but the demo sweep asked for "
                f"{expected} (cases, timesteps, nodes); move the old demo files away or match the sizes")
        return paths
    return write_demo_sweep(simulate_sweep(spec), directory)
