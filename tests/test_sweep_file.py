import os
import pickle

import numpy as np
import pytest

from modules.config.schema import DataConfig
from modules.data.sweep_file import (check_sweep, default_dataset_path, open_sweep, read_cases, read_timestep_block,
                                resolve_dataset_path, windowed_case)
from modules.errors import DataError


def sweep(cases=4, steps=5, nodes=6, dtype=np.float32):
    return np.arange(cases * steps * nodes, dtype=dtype).reshape(cases, steps, nodes)


def config(**overrides):
    values = dict(num_cases=4, num_timesteps=5, num_nodes=6)
    values.update(overrides)
    return DataConfig(**values)


# ----------------------------------------------------------------------------- resolve

def test_resolve_prefers_input_data_then_legacy_and_extension_order(tmp_path):
    data = DataConfig(data_number=3)
    (tmp_path / "input_data").mkdir()
    legacy = tmp_path / "dataset3.npy"
    np.save(legacy, sweep())
    assert resolve_dataset_path(data, tmp_path) == legacy
    npz = tmp_path / "input_data" / "dataset3.npz"
    np.savez(npz, data=sweep())
    assert resolve_dataset_path(data, tmp_path) == npz
    npy = tmp_path / "input_data" / "dataset3.npy"
    np.save(npy, sweep())
    assert resolve_dataset_path(data, tmp_path) == npy
    assert default_dataset_path(data, tmp_path) == npy


def test_resolve_uses_data_path_relative_to_base(tmp_path):
    np.save(tmp_path / "my_sweep.npy", sweep())
    data = DataConfig(data_number=1, data_path="my_sweep.npy")
    assert resolve_dataset_path(data, tmp_path) == tmp_path / "my_sweep.npy"
    with pytest.raises(DataError, match="data_path 'missing.npy'.*does not exist"):
        resolve_dataset_path(DataConfig(data_path="missing.npy"), tmp_path)


def test_resolve_missing_lists_every_path_tried(tmp_path):
    with pytest.raises(DataError) as caught:
        resolve_dataset_path(DataConfig(data_number=7), tmp_path)
    message = str(caught.value)
    for folder in (tmp_path / "input_data", tmp_path):
        for ext in (".npy", ".npz", ".pickle"):
            assert str(folder / f"dataset7{ext}") in message
    assert "set data_path in condition.txt" in message


# ----------------------------------------------------------------------------- open

def test_npy_is_memory_mapped_and_equal(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, sweep())
    array = open_sweep(path)
    assert isinstance(array, np.memmap)
    np.testing.assert_array_equal(array, sweep())


def test_npz_single_named_and_ambiguous(tmp_path):
    np.savez(tmp_path / "one.npz", anything=sweep())
    np.testing.assert_array_equal(open_sweep(tmp_path / "one.npz"), sweep())
    np.savez(tmp_path / "two.npz", coords=np.zeros(3), dataset=sweep())
    np.testing.assert_array_equal(open_sweep(tmp_path / "two.npz"), sweep())
    np.savez(tmp_path / "bad.npz", a=sweep(), b=sweep())
    with pytest.raises(DataError, match=r"holds 2 arrays \(a, b\) and none is named 'data' or 'dataset'"):
        open_sweep(tmp_path / "bad.npz")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_of_array_loads(tmp_path, protocol):
    path = tmp_path / "d.pickle"
    expected = sweep(dtype=np.float64)
    path.write_bytes(pickle.dumps(expected, protocol=protocol))
    np.testing.assert_array_equal(open_sweep(path), expected)


class _WritesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class _RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload, name", [(_WritesFile, "io.open"), (_RunsShell, "system")])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, name):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "dataset1.pickle"
    path.write_bytes(pickle.dumps(payload(str(target))))
    with pytest.raises(DataError) as caught:
        open_sweep(path)
    message = str(caught.value)
    assert f"refused to load {path}: it contains " in message
    assert name in message
    assert "which is not a numpy array; re-save the data with numpy.save" in message
    assert not target.exists()


def test_malicious_object_hidden_inside_array_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    hidden = np.empty(1, dtype=object)
    hidden[0] = _WritesFile(str(target))
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(hidden))
    with pytest.raises(DataError, match="refused to load"):
        open_sweep(path)
    assert not target.exists()


def test_truncated_pickle_names_file(tmp_path):
    path = tmp_path / "cut.pickle"
    path.write_bytes(pickle.dumps(sweep())[:-20])
    with pytest.raises(DataError, match=r"cut\.pickle is not a readable pickle of a numpy array"):
        open_sweep(path)


def test_pickle_of_list_is_refused(tmp_path):
    path = tmp_path / "d.pickle"
    path.write_bytes(pickle.dumps([sweep(), sweep()]))
    with pytest.raises(DataError, match="holds a list, not a numpy array"):
        open_sweep(path)


def test_truncated_npy_names_file(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, sweep())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut\.npy is truncated: .*shape \(4, 5, 6\)"):
        open_sweep(path)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array at all")
    with pytest.raises(DataError, match=r"garbage\.npy is not a readable \.npy file"):
        open_sweep(garbage)


@pytest.mark.parametrize("values", [np.array([[[True]]]), np.array([[["a"]]]), np.array([[[1]]], dtype=object)])
def test_non_numeric_dtypes_are_refused(tmp_path, values):
    path = tmp_path / "d.npy"
    np.save(path, values, allow_pickle=True)
    with pytest.raises(DataError, match="must hold real numbers"):
        open_sweep(path)


def test_object_array_in_npz_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", data=np.array([[[1]]], dtype=object))
    with pytest.raises(DataError, match="array of Python objects"):
        open_sweep(tmp_path / "d.npz")


def test_integer_sweep_is_read_as_float32(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, sweep(dtype=np.int16))
    array = open_sweep(path)
    assert array.dtype == np.int16  # converted lazily, on read
    case = windowed_case(array, 1, config())
    assert case.dtype == np.float32
    np.testing.assert_array_equal(case, sweep()[1])


# ----------------------------------------------------------------------------- check

@pytest.mark.parametrize("axis, key, meaning", [(0, "Dim1", "number of cases"), (1, "Dim2", "timesteps per case"),
                                                (2, "Dim3", "nodes per case")])
def test_each_dim_mismatch_is_named(tmp_path, axis, key, meaning):
    shape = [4, 5, 6]
    shape[axis] += 1
    array = np.zeros(shape, dtype=np.float32)
    path = tmp_path / "dataset1.npy"
    with pytest.raises(DataError) as caught:
        check_sweep(array, config(), path)
    message = str(caught.value)
    want, have = [4, 5, 6][axis], shape[axis]
    assert f"{path} (shape {tuple(shape)}) does not match condition.txt" in message
    assert f"{key} ({meaning}): condition.txt says {want}, dataset1.npy has {have} along axis {axis}" in message
    assert f"fix: set {key} to {have} in condition.txt, or check how dataset1.npy was exported" in message
    assert message.count("  - ") == 1


def test_all_mismatches_reported_together_and_condition_file_named(tmp_path):
    array = np.zeros((3, 2, 1, 2), dtype=np.float32)
    with pytest.raises(DataError) as caught:
        check_sweep(array, config(), tmp_path / "d.npy", condition_file="input_data/condition.txt")
    message = str(caught.value)
    assert message.count("  - ") == 4
    assert "num_var (variables per node): input_data/condition.txt says 1, d.npy has 2 along axis 3" in message


def test_wrong_number_of_axes_and_missing_variable_axis(tmp_path):
    with pytest.raises(DataError, match=r"has shape \(4, 30\) \(2 axes\)"):
        check_sweep(np.zeros((4, 30)), config(), tmp_path / "d.npy")
    with pytest.raises(DataError, match="condition.txt says 2, d.npy has no variable axis"):
        check_sweep(np.zeros((4, 5, 6)), config(num_variables=2), tmp_path / "d.npy")
    check_sweep(np.zeros((4, 5, 6, 2)), config(num_variables=2), tmp_path / "d.npy")


def test_nan_and_inf_located_by_case_timestep_node(tmp_path):
    array = sweep(cases=40)
    array[17, 3, 2] = np.nan
    array[30, 0, 5] = np.inf
    array[31, 4, 0] = -np.inf
    path = tmp_path / "d.npy"
    np.save(path, array)
    with pytest.raises(DataError) as caught:
        check_sweep(open_sweep(path), config(num_cases=40), path)
    message = str(caught.value)
    assert "holds 3 non-finite values (1 NaN, 2 Inf)" in message
    assert "the first is nan at case 17, timestep 3, node 2" in message


def test_inf_found_across_chunk_boundary(tmp_path, monkeypatch):
    from modules.runtime import memory
    monkeypatch.setattr(memory, "SCAN_BYTES", 1)  # one case per chunk
    array = sweep()
    array[2, 4, 5] = np.inf
    with pytest.raises(DataError, match="1 non-finite value \\(0 NaN, 1 Inf\\).*inf at case 2, timestep 4, node 5"):
        check_sweep(array, config(), tmp_path / "d.npy")


def test_nan_outside_window_is_ignored(tmp_path):
    array = sweep()
    array[0, 4, 0] = np.nan  # timestep 4 and node 0 are cut away
    array[1, 0, 0] = np.nan
    data = config(num_timesteps_used=4, node_start=1)
    check_sweep(array, data, tmp_path / "d.npy")
    array[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="case 1, timestep 2, node 3"):
        check_sweep(array, data, tmp_path / "d.npy")


def test_nan_in_a_later_variable_is_found_and_its_variable_named(tmp_path):
    array = np.stack([sweep(), sweep()], axis=-1)
    array[2, 1, 3, 1] = np.nan  # variable 1 only: it is trained too, so it is checked too
    with pytest.raises(DataError, match="the first is nan at case 2, timestep 1, node 3, variable 1"):
        check_sweep(array, config(num_variables=2), tmp_path / "d.npy")


# ----------------------------------------------------------------------------- windows

def test_window_applies_timesteps_nodes_and_keeps_every_variable():
    full = sweep()
    data = config(num_timesteps_used=3, node_start=2, node_end=5)
    case = windowed_case(full, 2, data)
    assert case.shape == (3, 3) and case.dtype == np.float32
    np.testing.assert_array_equal(case, full[2, :3, 2:5])
    with_variables = np.stack([full, -full], axis=-1)
    both = windowed_case(with_variables, 2, config(num_variables=2, num_timesteps_used=3, node_start=2, node_end=5))
    assert both.shape == (3, 6)  # node-major: node 2 variable 0, node 2 variable 1, node 3 variable 0, ...
    np.testing.assert_array_equal(both[:, 0::2], full[2, :3, 2:5])
    np.testing.assert_array_equal(both[:, 1::2], -full[2, :3, 2:5])
    cases = read_cases(full, [3, 0], data)
    assert cases.shape == (2, 3, 3)
    np.testing.assert_array_equal(cases, full[[3, 0], :3, 2:5])


def test_windowed_case_from_memmap_is_writable_copy(tmp_path):
    np.save(tmp_path / "d.npy", sweep())
    case = windowed_case(open_sweep(tmp_path / "d.npy"), 0, config())
    assert case.flags.writeable and not isinstance(case, np.memmap)


def test_memmap_reads_match_slices_for_every_window_and_layout(tmp_path):
    full = sweep()
    with_variables = np.stack([full, -full], axis=-1)
    for name, stored, variables in (("three.npy", full, 1), ("four.npy", with_variables, 2)):
        np.save(tmp_path / name, stored)
        mapped = open_sweep(tmp_path / name)
        assert isinstance(mapped, np.memmap)
        data = config(num_variables=variables, num_timesteps_used=4, node_start=1, node_end=5)
        expected = stored[:, :, 1:5].reshape(stored.shape[:2] + (4 * variables,))
        np.testing.assert_array_equal(read_cases(mapped, [3, 1, -1], data), expected[[3, 1, -1], :4])
        block = read_timestep_block(mapped, [0, 3], 1, 3, data)
        np.testing.assert_array_equal(block, expected[[0, 3], 1:3])
        assert read_timestep_block(mapped, [2], 2, 2, data).shape == (1, 0, 4 * variables)
    with pytest.raises(IndexError, match="timesteps \\[2, 5\\) are outside the 4 used"):
        read_timestep_block(mapped, [0], 2, 5, data)
    with pytest.raises(IndexError, match="case 9 is outside the sweep's 4 cases"):
        read_cases(mapped, [9], data)


def test_spread_windows_read_exactly_the_kept_stored_steps_from_memory_and_from_the_file(tmp_path):
    full = sweep()
    np.save(tmp_path / "d.npy", full)
    data = config(num_timesteps_used=3, timestep_mode="spread", node_start=1, node_end=5)
    kept = list(data.timestep_indices)
    assert kept[0] == 0 and kept[-1] == full.shape[1] - 1 and len(kept) == 3
    for stored in (full, open_sweep(tmp_path / "d.npy")):
        np.testing.assert_array_equal(read_cases(stored, [3, 0], data), full[[3, 0]][:, kept, 1:5])
        np.testing.assert_array_equal(read_timestep_block(stored, [1], 1, 3, data), full[[1]][:, kept[1:], 1:5])


def test_a_nan_between_spread_steps_is_not_in_the_window_but_one_on_a_kept_step_is(tmp_path):
    array = sweep()
    data = config(num_timesteps_used=3, timestep_mode="spread")
    skipped = sorted(set(range(array.shape[1])) - set(data.timestep_indices))[0]
    array[1, skipped, 0] = np.nan
    check_sweep(array, data, tmp_path / "d.npy")
    array[2, data.timestep_indices[-1], 3] = np.nan
    with pytest.raises(DataError, match="case 2, timestep 4, node 3"):  # the stored step, as the export numbers it
        check_sweep(array, data, tmp_path / "d.npy")


def test_reading_a_memmapped_sweep_does_not_map_its_pages(tmp_path):
    # Pages read through a memory map stay in the process's resident set; positional reads leave them in the
    # page cache only. mincore is not reachable from Python, so check the mechanism: the map is never indexed.
    np.save(tmp_path / "d.npy", sweep())
    mapped = open_sweep(tmp_path / "d.npy")

    class NoIndexing(np.memmap):
        def __getitem__(self, key):
            raise AssertionError("read through the memory map")

    guarded = mapped.view(NoIndexing)
    guarded.filename, guarded.offset = mapped.filename, mapped.offset
    np.testing.assert_array_equal(read_cases(guarded, [2], config()), sweep()[[2]])


def test_file_shrinking_after_open_is_reported(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, sweep())
    mapped = open_sweep(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 8)
    with pytest.raises(DataError, match="the file ended while reading case 3"):
        read_cases(mapped, [3], config())
