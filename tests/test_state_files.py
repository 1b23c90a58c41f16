"""Atomic writes, safe loads and the config-match rule."""
from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
import torch

from modules.storage import atomic_files
from modules.storage.state_files import differing_keys, load_state, require_matching, save_state
from modules.errors import CheckpointError, SimulGenError


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = {"format": "x", "model": {"w": torch.arange(4.0)}, "epoch": 3, "history": {"loss": [1.0, 0.5]}}
    save_state(tmp_path / "a.pt", state)
    loaded = load_state(tmp_path / "a.pt")
    assert torch.equal(loaded["model"]["w"], torch.arange(4.0)) and loaded["epoch"] == 3
    assert loaded["history"] == {"loss": [1.0, 0.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temp file left


def test_full_disk_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_state(target, {"format": "x", "epoch": 1})
    before = target.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "replace", no_space)
    with pytest.raises(SimulGenError, match="could not write .*last.pt: the disk is full. The previous version"):
        save_state(target, {"format": "x", "epoch": 2})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_state(good, {"format": "x", "model": {"w": torch.ones(1000)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable SimulGenVAE checkpoint"):
        load_state(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable SimulGenVAE checkpoint"):
        load_state(text)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="no 'format' entry"):
        load_state(plain)
    with pytest.raises(CheckpointError, match="file not found"):
        load_state(tmp_path / "missing.pt")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_payload_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "x", "payload": _Payload(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load: it holds Python objects"):
        load_state(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError):
        load_state(raw)
    assert not marker.exists()


def test_differing_keys_are_named():
    saved = {"model": {"encoder_filters": [64, 32], "latent_dim_main": 32}, "num_nodes": 100}
    current = {"model": {"encoder_filters": (64, 16), "latent_dim_main": 32}, "num_nodes": 100}
    assert differing_keys(saved, current) == ["model.encoder_filters: saved [64, 32], now (64, 16)"]
    assert differing_keys(saved, {**saved}) == []
    with pytest.raises(CheckpointError, match="model.encoder_filters: saved \\[64, 32\\], now \\(64, 16\\)"):
        require_matching(Path("x.pt"), saved, current, "VAE")
