"""cache_cases: streamed cases kept in one shared-memory cache, filled by the DataLoader workers and reused."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import DataLoader

from modules.config.schema import DataConfig, RunConfig, TrainConfig
from modules.data import datasets
from modules.data.case_cache import SharedCaseCache
from modules.data.datasets import FieldDataset
from modules.data.prepared_sweep import case_caches
from modules.data.scaling import NodeScaler
from modules.data.sweep_file import open_sweep
from modules.runtime import memory
from modules.runtime.distributed import Runtime

DATA = DataConfig(num_cases=6, num_timesteps=5, num_nodes=8, load_all=False, cache_cases=3)


def on_fields(**data_changes) -> RunConfig:
    """A run whose VAE trains on the full fields, the only training the cache serves."""
    return RunConfig(data=dataclasses.replace(DATA, **data_changes), train=TrainConfig(pod_projected_training=False))


def streamed(tmp_path, cache):
    path = tmp_path / "dataset1.npy"
    np.save(path, np.random.default_rng(0).normal(size=(6, 5, 8)).astype(np.float32))
    scaler = NodeScaler().fit(open_sweep(path), [0, 1, 2, 3, 4], DATA)
    return FieldDataset(path, [0, 1, 2, 3, 4], DATA, scaler, load_all=False, cache=cache)


def test_cached_cases_equal_read_ones_and_are_not_read_again(tmp_path, monkeypatch):
    cache = SharedCaseCache(3, (8, 5), 5)
    dataset = streamed(tmp_path, cache)
    plain = FieldDataset(dataset.path, dataset.case_indices, DATA, dataset.scaler, load_all=False)
    first = [dataset[i][0].clone() for i in range(5)]
    for i in range(5):
        assert torch.equal(first[i], plain[i][0])
    reads = []
    real = datasets.windowed_case
    monkeypatch.setattr(datasets, "windowed_case", lambda *a: reads.append(a[1]) or real(*a))
    second = [dataset[i][0] for i in range(5)]
    assert reads == [3, 4]  # positions 0-2 have slots: only the other two are read again
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert cache.hit_rate() == 3 / 10
    assert dataset.loading_note() == ("case cache: 3 of 3 slots filled (0.00 GiB at most), 30.0% of 10 reads "
                                      "served from it")


def test_dataloader_workers_fill_one_cache_that_the_next_epochs_workers_reuse(tmp_path):
    cache = SharedCaseCache(3, (8, 5), 5)
    dataset = streamed(tmp_path, cache)
    for _ in range(2):  # a new loader per epoch, as the training loop makes: new worker processes
        batches = list(DataLoader(dataset, batch_size=2, num_workers=2))
        assert sorted(int(c) for _, cases in batches for c in cases) == [0, 1, 2, 3, 4]
    assert int(cache.filled.sum()) == 3  # the workers' writes are seen here: the store is shared
    assert cache.misses.tolist() == [1, 1, 1, 2, 2] and cache.reads.tolist() == [2] * 5


def test_the_cache_takes_cache_cases_within_its_share_of_free_memory(monkeypatch):
    case_bytes = 8 * 5 * 4
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: int(2.5 * case_bytes / memory.CASE_CACHE_HOST_SHARE))
    train, val = case_caches(on_fields(cache_cases=10), 4, 2, None)
    assert train.slots == 2 and val is None  # 2.5 cases of memory: the training cases first
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 10 ** 12)
    train, val = case_caches(on_fields(cache_cases=5), 4, 2, None)
    assert (train.slots, val.slots) == (4, 1)
    two_processes = Runtime(torch.device("cpu"), local_world_size=2)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: int(6 * case_bytes / memory.CASE_CACHE_HOST_SHARE))
    assert case_caches(on_fields(cache_cases=10), 4, 2, two_processes)[0].slots == 3
    assert case_caches(on_fields(cache_cases=0), 4, 2, None) == (None, None)
    assert case_caches(on_fields(load_all=True), 4, 2, None) == (None, None)


def test_no_cache_when_the_vae_trains_on_coefficients():
    """Training on spatial-mode coefficients reads each case once to project it: nothing to serve again."""
    config = RunConfig(data=dataclasses.replace(DATA, cache_cases=10))
    assert config.trains_on_coefficients
    assert case_caches(config, 4, 2, None) == (None, None)
