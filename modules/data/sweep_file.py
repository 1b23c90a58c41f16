"""Finding, opening and checking the user's sweep file, and reading windows of it.

The sweep is an array [cases, timesteps, nodes] (optionally with a trailing
variable axis, read as nodes x variables channels: modules.data.variables).
`.npy` files are memory-mapped so a sweep larger than RAM can be checked and streamed; `.npz` and `.pickle` files are read whole. Pickles go
through an allow-list unpickler, so a file that would run code is refused before
anything in it executes.

Legacy names Dim1/Dim2/Dim3 appear here only inside messages, because that is
what the user wrote in condition.txt.
"""
from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from modules.config.schema import DataConfig
from modules.data.variables import as_channels
from modules.errors import DataError
from modules.runtime import memory, progress

DATASET_EXTENSIONS = (".npy", ".npz", ".pickle")
PICKLE_EXTENSIONS = (".pickle", ".pkl")
NPZ_PREFERRED_KEYS = ("data", "dataset")

# Axis meanings as the user knows them from condition.txt: (legacy key, meaning, DataConfig field).
_AXES = (
    ("Dim1", "number of cases", "num_cases"),
    ("Dim2", "timesteps per case", "num_timesteps"),
    ("Dim3", "nodes per case", "num_nodes"),
    ("num_var", "variables per node", "num_variables"),
)


# ----------------------------------------------------------------------------- locating the file

def default_dataset_path(data: DataConfig, base_dir: Path) -> Path:
    """Where a sweep is expected when data_path is not set (also where a demo sweep is written)."""
    return Path(base_dir) / "input_data" / f"dataset{data.data_number}.npy"


def legacy_dataset_paths(data: DataConfig, base_dir: Path) -> List[Path]:
    """Where a sweep is looked for without data_path, in order: input_data/dataset{N}.*, then base_dir/dataset{N}.*."""
    stem = f"dataset{data.data_number}"
    return [Path(base_dir) / folder / f"{stem}{ext}" for folder in ("input_data", ".") for ext in DATASET_EXTENSIONS]


def resolve_dataset_path(data: DataConfig, base_dir: Path) -> Path:
    """The sweep file: data_path if set, else input_data/dataset{N}.*, else the legacy base_dir/dataset{N}.*."""
    base_dir = Path(base_dir)
    if data.data_path:
        path = base_dir / data.data_path
        if path.is_file():
            return path
        raise DataError(
            f"data_path '{data.data_path}' (in condition.txt or on the command line) points to {path}, "
            f"which does not exist\n    fix: correct data_path, or remove it to use input_data/dataset{data.data_number}.npy")
    tried = legacy_dataset_paths(data, base_dir)
    for path in tried:
        if path.is_file():
            return path
    listing = "\n".join(f"      {p}" for p in tried)
    raise DataError(
        f"no dataset file found for data_No {data.data_number}; tried:\n{listing}\n"
        f"    fix: put the sweep at {tried[0]} (array [Dim1 cases, Dim2 timesteps, Dim3 nodes]), "
        f"or set data_path in condition.txt to the file's location")


# ----------------------------------------------------------------------------- opening the file

def open_sweep(path: Path) -> np.ndarray:
    """The sweep array: memory-mapped for .npy, read whole for .npz and .pickle/.pkl. Never runs pickled code."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _open_npy(path)
    elif suffix == ".npz":
        array = _open_npz(path)
    elif suffix in PICKLE_EXTENSIONS:
        array = _open_pickle(path)
    else:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'\n"
                        f"    fix: save the sweep with numpy.save as a .npy file (or .npz / .pickle)")
    _check_dtype(array.dtype, path)
    return array


def _check_dtype(dtype: np.dtype, path: Path) -> None:
    # Integers are fine (converted to float32 when read); bool/complex/str/object are not field values.
    if dtype.kind not in "fiu":
        raise DataError(
            f"{path} holds values of type {dtype}, but a sweep must hold real numbers (float or integer)\n"
            f"    fix: re-save the data as floats, e.g. numpy.save(path, array.astype(numpy.float32))")


def _open_npy(path: Path) -> np.ndarray:
    # Read the header ourselves first: object dtypes and truncation then get a clear message
    # instead of numpy's mmap ValueError.
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
            data_offset = handle.tell()
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npy file ({error})\n"
                        f"    fix: re-export the sweep with numpy.save") from error
    _check_dtype(dtype, path)
    expected = data_offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            f"{path} is truncated: its header describes shape {tuple(shape)} of {dtype} "
            f"({expected} bytes) but the file has {actual} bytes\n"
            f"    fix: copy or export the file again (the transfer or save was cut short)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"{path} cannot be memory-mapped ({error})\n"
                        f"    fix: re-export the sweep with numpy.save") from error


def _open_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if len(keys) == 1:
                key = keys[0]
            else:
                preferred = [k for k in NPZ_PREFERRED_KEYS if k in keys]
                if not preferred:
                    raise DataError(
                        f"{path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}) and none is named "
                        f"'data' or 'dataset'\n    fix: save the sweep under the name 'data', "
                        f"e.g. numpy.savez(path, data=array), or save it alone with numpy.save")
                key = preferred[0]
            return archive[key]
    except DataError:
        raise
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path} holds an array of Python objects, not numbers\n"
                            f"    fix: re-save the data as floats, e.g. numpy.savez(path, data=array.astype(numpy.float32))"
                            ) from error
        raise DataError(f"{path} is not a readable .npz file ({error})\n"
                        f"    fix: re-export the sweep with numpy.save") from error
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path} is not a readable .npz file ({error})\n"
                        f"    fix: re-export the sweep with numpy.save") from error


def _numpy_core():
    # numpy >= 2 calls the package numpy._core; pickles written by numpy 1.x name numpy.core.
    return getattr(np, "_core", None) or np.core


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    core = _numpy_core()
    allowed: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocols 0-2 store raw bytes as latin-1 text and turn them back with _codecs.encode.
        ("_codecs", "encode"): __import__("_codecs").encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        # Protocol 5 rebuilds arrays from a buffer instead of _reconstruct.
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a plain numpy array needs; anything else is refused before it is called."""

    def __init__(self, handle: io.BufferedIOBase, path: Path):
        super().__init__(handle)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refused to load {self._path}: it contains {module}.{name}, which is not a numpy array; "
                f"re-save the data with numpy.save") from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refused to load {self._path}: it refers to external objects, which is not a numpy array; "
                        f"re-save the data with numpy.save")


def _open_pickle(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            obj = _ArrayOnlyUnpickler(handle, path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, RecursionError) as error:
        raise DataError(f"{path} is not a readable pickle of a numpy array ({type(error).__name__}: {error})\n"
                        f"    fix: re-save the data with numpy.save") from error
    if not isinstance(obj, np.ndarray):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a numpy array\n"
                        f"    fix: save a single array [Dim1 cases, Dim2 timesteps, Dim3 nodes] with numpy.save")
    return obj


# ----------------------------------------------------------------------------- checking it

def cases_per_chunk(array: np.ndarray) -> int:
    """How many whole stored cases fit in memory.SCAN_BYTES (at least one)."""
    return memory.items_per_chunk(int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize,
                                  memory.SCAN_BYTES)


def check_sweep(array: np.ndarray, data: DataConfig, path: Path, condition_file: str = "condition.txt",
                hint: str = "") -> None:
    """Refuse an array whose shape disagrees with condition.txt (`hint`, when given, ends that message) or
    whose used window holds NaN/Inf."""
    check_shape(array, data, Path(path), condition_file, hint)
    check_finite(array, data, Path(path))


def check_shape(array: np.ndarray, data: DataConfig, path: Path, condition_file: str = "condition.txt",
                hint: str = "") -> None:
    """Refuse an array whose shape disagrees with condition.txt (without reading its values)."""
    expected = [data.num_cases, data.num_timesteps, data.num_nodes]
    if array.ndim not in (3, 4):
        raise DataError(
            f"{path} has shape {tuple(array.shape)} ({array.ndim} axes), but a sweep must be "
            f"[Dim1 cases, Dim2 timesteps, Dim3 nodes] = {expected}, optionally with a trailing num_var axis\n"
            f"    fix: check how {path.name} was exported; it needs one row per case, then timesteps, then nodes")
    problems = []
    for axis, (key, meaning, field_name) in enumerate(_AXES[:array.ndim]):
        want, have = getattr(data, field_name), array.shape[axis]
        if want != have:
            problems.append(
                f"  - {key} ({meaning}): {condition_file} says {want}, {path.name} has {have} along axis {axis}\n"
                f"    fix: set {key} to {have} in {condition_file}, or check how {path.name} was exported")
    if array.ndim == 3 and data.num_variables != 1:
        problems.append(
            f"  - num_var (variables per node): {condition_file} says {data.num_variables}, "
            f"{path.name} has no variable axis (3 axes)\n"
            f"    fix: set num_var to 1 in {condition_file}, or export the sweep with a trailing variable axis")
    if problems:
        raise DataError(f"{path} (shape {tuple(array.shape)}) does not match {condition_file}:\n" + "\n".join(problems)
                        + (f"\n  {hint}" if hint else ""))


def check_finite(array: np.ndarray, data: DataConfig, path: Path,
                 case_indices: Optional[Sequence[int]] = None) -> None:
    """Refuse NaN/Inf in the window of those cases (default: all), naming the first bad value."""
    # Only the window that will be trained is scanned: NaNs in nodes or timesteps the user cut away do no harm.
    if array.dtype.kind != "f":
        return
    first = None
    num_nan = num_inf = 0
    scanned = range(array.shape[0]) if case_indices is None else [int(case) for case in case_indices]
    for cases in progress.counted(memory.chunks(scanned, cases_per_chunk(array)), len(scanned),
                                  "data: NaN/Inf check"):
        window = read_cases(array, cases, data, as_float32=False)
        bad = ~np.isfinite(window)
        count = int(bad.sum())
        if not count:
            continue
        nan_here = int(np.isnan(window).sum())
        num_nan += nan_here
        num_inf += count - nan_here
        if first is None:
            case, step, channel = np.unravel_index(int(np.argmax(bad)), bad.shape)
            node, variable = divmod(int(channel), data.num_variables)
            where = f"node {data.node_start + node}" + (f", variable {variable}" if data.num_variables > 1 else "")
            # the stored timestep, as the user's export numbers it, not its place in a Dim2_red window
            first = (cases[int(case)], data.timestep_indices[int(step)], where, float(window[case, step, channel]))
    if first is not None:
        case, step, where, value = first
        total = num_nan + num_inf
        raise DataError(
            f"{path} holds {total} non-finite value{'s' if total != 1 else ''} ({num_nan} NaN, {num_inf} Inf) "
            f"in the window used for training; the first is {value} at case {case}, timestep {step}, {where}\n"
            f"    fix: repair or drop those cases in the export (or narrow Dim2_red / Dim3_start / Dim3_end to exclude them)")


# ----------------------------------------------------------------------------- reading windows

def windowed_case(array: np.ndarray, index: int, data: DataConfig) -> np.ndarray:
    """One case as float32 [timesteps used, channels]: the Dim2_red timesteps Dim2_red_mode keeps
    (DataConfig.timestep_indices), nodes [Dim3_start, Dim3_end), each with all its variables (channels =
    nodes x num_var, node-major)."""
    return read_cases(array, [index], data)[0]


def read_cases(array: np.ndarray, indices: Sequence[int], data: DataConfig, as_float32: bool = True) -> np.ndarray:
    """Several cases as float32 [k, timesteps used, channels] (the stored dtype with as_float32=False),
    read one case at a time to touch only the window. A fresh array: it never aliases the file."""
    return read_timestep_block(array, indices, 0, data.timesteps, data, as_float32)


def read_timestep_block(array: np.ndarray, indices: Sequence[int], first_step: int, stop_step: int,
                        data: DataConfig, as_float32: bool = True) -> np.ndarray:
    """Used timesteps [first_step, stop_step) (positions in DataConfig.timestep_indices, not stored steps) of
    the node window of several cases: [k, steps, channels], every variable of every node kept (node-major,
    modules.data.variables)."""
    indices = [_case_number(array, i) for i in indices]
    if not 0 <= first_step <= stop_step <= data.timesteps:
        raise IndexError(f"timesteps [{first_step}, {stop_step}) are outside the {data.timesteps} used")
    stored_steps = data.timestep_indices[first_step:stop_step]
    dtype = np.float32 if as_float32 else array.dtype
    out = np.empty((len(indices), stop_step - first_step, data.channels), dtype=dtype)
    for row, index in enumerate(indices):
        start = 0
        for run in _consecutive_runs(stored_steps):
            stored = _stored_steps(array, index, run.start, run.stop)
            window = stored[:, data.node_start:data.node_stop]
            out[row, start:start + len(run)] = as_channels(window) if window.ndim == 3 else window
            start += len(run)
    return out


def _consecutive_runs(steps: Sequence[int]) -> List[range]:
    """Increasing stored steps as runs of consecutive ones ([0, 1, 2, 5, 9, 10] -> 0..2, 5, 9..10): each run
    is one read, so 'first' windows stay one read per case and 'spread' ones read only the steps kept."""
    runs: List[range] = []
    for step in steps:
        if runs and runs[-1].stop == step:
            runs[-1] = range(runs[-1].start, step + 1)
        else:
            runs.append(range(step, step + 1))
    return runs


def _stored_steps(array: np.ndarray, index: int, first_step: int, stop_step: int) -> np.ndarray:
    """Stored rows [first_step, stop_step) of case `index`, all nodes (and variables), as an in-memory copy.

    For a memory-mapped .npy the bytes are read with plain positional reads instead of through the
    map: pages touched through a map count as the process's resident memory until the kernel needs
    them back, so one pass over a 37 GB sweep would show as ~20 GB resident. Read this way, the same
    pages sit in the page cache, which the kernel frees at will."""
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or filename is None or not array.flags.c_contiguous:
        return np.array(array[index, first_step:stop_step])
    row_items = int(np.prod(array.shape[2:], dtype=np.int64))
    case_bytes = array.shape[1] * row_items * array.itemsize
    start = array.offset + index * case_bytes + first_step * row_items * array.itemsize
    out = np.empty((stop_step - first_step,) + tuple(array.shape[2:]), dtype=array.dtype)
    buffer = memoryview(out.reshape(-1).view(np.uint8))
    with open(filename, "rb", buffering=0) as handle:
        handle.seek(start)
        done = 0
        while done < len(buffer):
            count = handle.readinto(buffer[done:])
            if not count:
                raise DataError(f"{filename}: the file ended while reading case {index} "
                                f"(it changed or was truncated after it was opened)\n"
                                f"    fix: copy or export the sweep again and restart")
            done += count
    return out


def _case_number(array: np.ndarray, index: int) -> int:
    index = int(index)
    if not -array.shape[0] <= index < array.shape[0]:
        raise IndexError(f"case {index} is outside the sweep's {array.shape[0]} cases")
    return index % array.shape[0]
