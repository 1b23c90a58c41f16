import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from modules.config.schema import DataConfig
from modules.data.sweep_file import open_sweep
from modules.data.datasets import FieldDataset
from modules.errors import DataError
from modules.data.scaling import NodeScaler

DATA = DataConfig(num_cases=6, num_timesteps=5, num_nodes=8, num_timesteps_used=4, node_start=1, node_end=7)


@pytest.fixture
def sweep_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "dataset1.npy"
    np.save(path, rng.normal(size=(6, 5, 8)).astype(np.float32))
    return path


def test_item_is_scaled_transposed_window(sweep_file):
    array = open_sweep(sweep_file)
    train, val = [0, 1, 3, 4], [2, 5]
    scaler = NodeScaler().fit(array, train, DATA)
    dataset = FieldDataset(sweep_file, val, DATA, scaler, load_all=True)
    assert len(dataset) == 2
    field, case_index = dataset[1]
    assert case_index == 5
    assert field.shape == (6, 4) and field.dtype == torch.float32  # [nodes used, timesteps used]
    raw = np.asarray(array[5, :4, 1:7], dtype=np.float64)  # [T, N]
    expected = (raw - (scaler.data_max + scaler.data_min) / 2) / ((scaler.data_max - scaler.data_min) / 2) * 0.7
    np.testing.assert_allclose(field.numpy(), expected.T, rtol=1e-6, atol=1e-6)


def test_streamed_items_equal_in_memory_items(sweep_file):
    scaler = NodeScaler().fit(open_sweep(sweep_file), [0, 2, 4], DATA)
    in_memory = FieldDataset(sweep_file, range(6), DATA, scaler, load_all=True)
    streamed = FieldDataset(sweep_file, range(6), DATA, scaler, load_all=False)
    for i in range(6):
        assert in_memory[i][1] == streamed[i][1] == i
        assert torch.equal(in_memory[i][0], streamed[i][0])
    training = torch.stack([in_memory[i][0] for i in (0, 2, 4)])
    assert training.min() >= -0.7 and training.max() <= 0.7


def test_every_variable_is_a_channel_scaled_on_its_own_streamed_or_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    stored = np.stack([rng.normal(size=(6, 5, 8)), 1e3 + 50 * rng.normal(size=(6, 5, 8))], axis=-1)
    path = tmp_path / "two.npy"
    np.save(path, stored.astype(np.float32))
    data = DataConfig(num_cases=6, num_timesteps=5, num_nodes=8, num_variables=2, num_timesteps_used=4,
                      node_start=1, node_end=7)
    scaler = NodeScaler().fit(open_sweep(path), [0, 2, 4], data)
    assert scaler.num_nodes == 12  # 6 nodes x 2 variables, each with its own bounds
    np.testing.assert_allclose(scaler.data_max[1::2], stored[[0, 2, 4], :4, 1:7, 1].max(axis=(0, 1)), rtol=1e-6)
    in_memory = FieldDataset(path, range(6), data, scaler, load_all=True)
    streamed = FieldDataset(path, range(6), data, scaler, load_all=False)
    for i in range(6):
        assert in_memory[i][0].shape == (12, 4) and torch.equal(in_memory[i][0], streamed[i][0])
    training = torch.stack([in_memory[i][0] for i in (0, 2, 4)])
    assert training[:, 1::2].min() == pytest.approx(-0.7) and training[:, 1::2].max() == pytest.approx(0.7)


def test_streamed_dataset_pickles_without_the_array_and_works_in_workers(sweep_file):
    scaler = NodeScaler().fit(open_sweep(sweep_file), [0, 1, 2], DATA)
    streamed = FieldDataset(sweep_file, [5, 3], DATA, scaler, load_all=False)
    blob = pickle.dumps(streamed)
    assert len(blob) < 1200  # the memory map is not pickled: with it the blob is ~1900 bytes
    reopened = pickle.loads(blob)
    assert reopened._array is None and reopened.path == sweep_file
    assert torch.equal(reopened[0][0], streamed[0][0])
    # The unpickled copy has no array yet, so the worker must reopen the file by path (as under spawn).
    loader = DataLoader(pickle.loads(blob), batch_size=2, num_workers=1, multiprocessing_context="fork")
    fields, cases = next(iter(loader))
    assert fields.shape == (2, 6, 4)
    assert cases.tolist() == [5, 3]
    assert torch.equal(fields[1], streamed[1][0])


def test_memory_budget_refusal(sweep_file):
    from modules.data.datasets import require_memory_for

    needed = 6 * 6 * 4 * 4  # cases x nodes x timesteps x float32
    require_memory_for(6, DATA, sweep_file, torch.device("cpu"), needed)
    with pytest.raises(DataError) as caught:
        require_memory_for(6, DATA, sweep_file, torch.device("cpu"), needed - 1)
    message = str(caught.value)
    assert "keeping 6 cases x 4 timesteps x 6 nodes of" in message
    assert f"needs {needed / 2**30:.2f} GiB, but only" in message
    assert "--load_all=0" in message


def test_in_memory_from_npz_array(tmp_path, sweep_file):
    array = np.load(sweep_file)
    npz = tmp_path / "dataset1.npz"
    np.savez(npz, data=array)
    scaler = NodeScaler().fit(array, [0, 1], DATA)
    from_npz = FieldDataset(npz, [4], DATA, scaler, load_all=False)
    from_npy = FieldDataset(sweep_file, [4], DATA, scaler, load_all=True)
    assert torch.equal(from_npz[0][0], from_npy[0][0])


def test_gpu_budget_is_checked_only_for_a_cuda_device(sweep_file):
    from modules.data.datasets import require_memory_for
    needed = 6 * 6 * 4 * 4
    require_memory_for(6, DATA, sweep_file, torch.device("cpu"), needed, device_budget_bytes=1)
    with pytest.raises(DataError) as caught:
        require_memory_for(6, DATA, sweep_file, torch.device("cuda", 0), needed, device_budget_bytes=needed - 1)
    assert "in GPU memory (cuda:0)" in str(caught.value) and "--load_all=0" in str(caught.value)


def test_whole_sweep_refused_before_any_pass_over_the_file(tmp_path, monkeypatch):
    from modules.data import prepared_sweep as sweep_data
    from modules.runtime import memory
    from modules.config.schema import RunConfig
    path = tmp_path / "dataset1.npy"
    np.save(path, np.zeros((6, 5, 8), dtype=np.float32))
    config = RunConfig(data=DataConfig(num_cases=6, num_timesteps=5, num_nodes=8, data_path=str(path), load_all=True))
    needed = 6 * 5 * 8 * 4
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: int(needed / memory.LOAD_ALL_HOST_SHARE) - 8)
    monkeypatch.setattr(sweep_data, "check_shape", lambda *args, **kwargs: pytest.fail("the file was checked"))
    monkeypatch.setattr(sweep_data, "check_finite", lambda *args, **kwargs: pytest.fail("the file was scanned"))
    with pytest.raises(DataError, match="keeping 6 cases x 5 timesteps x 8 nodes of .* in memory needs"):
        sweep_data.prepare_sweep(config, tmp_path)


def _streamed_config(path, num_cases: int):
    from modules.config.schema import RunConfig
    return RunConfig(data=DataConfig(num_cases=num_cases, num_timesteps=5, num_nodes=8, data_path=str(path),
                                     load_all=False, validation_fraction=0.2, test_fraction=0.2))


def test_the_nan_check_and_the_scaler_fit_read_each_case_once(tmp_path, monkeypatch):
    from modules.data import prepared_sweep as sweep_data
    from modules.data import scaling, sweep_file
    path = tmp_path / "dataset1.npy"
    np.save(path, np.random.default_rng(0).standard_normal((10, 5, 8)).astype(np.float32))
    reads = []

    def counting(read):
        def wrapped(array, indices, *args, **kwargs):
            reads.extend(int(i) for i in indices)
            return read(array, indices, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(sweep_file, "read_cases", counting(sweep_file.read_cases))
    monkeypatch.setattr(scaling, "read_cases", counting(scaling.read_cases))
    prepared = sweep_data.prepare_sweep(_streamed_config(path, 10), tmp_path)
    assert sorted(reads) == list(range(10))
    assert len(prepared.train_indices) == 6


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_a_nan_in_any_case_of_the_window_is_refused_with_its_place(tmp_path, split):
    from modules.data import prepared_sweep as sweep_data
    from modules.data.case_split import split_cases
    path = tmp_path / "dataset1.npy"
    config = _streamed_config(path, 10)
    fields = np.random.default_rng(0).standard_normal((10, 5, 8)).astype(np.float32)
    case = int(getattr(split_cases(config.data, tmp_path), split)[0])
    fields[case, 3, 6] = np.nan
    fields[9 - case, 1, 2] = np.inf if case != 9 - case else np.nan
    np.save(path, fields)
    with pytest.raises(DataError) as caught:
        sweep_data.prepare_sweep(config, tmp_path)
    first = min(case, 9 - case)
    assert "2 non-finite values" in str(caught.value) and f"at case {first}, timestep" in str(caught.value)
