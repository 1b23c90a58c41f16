"""demo_data 1: the demo is written only where it is meant, and a user whose own sweep is meant is told how."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from modules.config.legacy_files import load_run_config
from modules.data.demo_request import ensure_demo_data
from modules.data.demo_sweep import DemoSweepSpec, ensure_demo_sweep
from modules.data.prepared_sweep import prepare_sweep
from modules.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def shipped_files_with_dims(folder: Path, cases: int, timesteps: int, nodes: int):
    """The shipped preset.txt and condition.txt, with only Dim1-3 edited, as a new user does."""
    (folder / "input_data").mkdir()
    preset, condition = folder / "preset.txt", folder / "input_data" / "condition.txt"
    shutil.copy(REPO / "preset.txt", preset)
    text = (REPO / "input_data" / "condition.txt").read_text()
    for key, value in (("Dim1", cases), ("Dim2", timesteps), ("Dim3", nodes)):
        line = next(line for line in text.splitlines() if line.startswith(key + "\t"))
        text = text.replace(line, f"{key}\t\t{value}", 1)
    condition.write_text(text)
    config, _ = load_run_config(preset, condition)
    return config


def refusal(config, base_dir: Path) -> str:
    with pytest.raises(DataError) as caught:
        ensure_demo_data(config.data, base_dir)
    return str(caught.value)


def test_a_sweep_dropped_into_input_data_is_named_instead_of_being_replaced_by_the_demo(tmp_path):
    config = shipped_files_with_dims(tmp_path, 20, 10, 1000)
    np.save(tmp_path / "input_data" / "dataset1.npy", np.zeros((20, 10, 1000), dtype=np.float32))
    assert refusal(config, tmp_path) == (
        f"demo_data 1 would write the built-in demo sweep to {tmp_path}/input_data/demo/dataset1.npy and train on "
        f"it, but your sweep {tmp_path}/input_data/dataset1.npy would be left unused\n"
        f"    fix: set data_path to input_data/dataset1.npy and demo_data 0 in condition.txt (or delete the "
        f"data_path and demo_data lines); to make the demo anyway, move input_data/dataset1.npy away for the run "
        f"that writes it")
    assert not (tmp_path / "input_data" / "demo").exists()


def test_a_square_dim3_does_not_turn_a_users_sweep_into_the_demo(tmp_path):
    config = shipped_files_with_dims(tmp_path, 20, 10, 900)
    np.save(tmp_path / "dataset1.npy", np.zeros((20, 10, 900), dtype=np.float32))  # the legacy place, beside the run
    assert f"your sweep {tmp_path}/dataset1.npy would be left unused" in refusal(config, tmp_path)
    assert not (tmp_path / "input_data" / "demo").exists()


def test_a_non_square_dim3_without_a_sweep_says_how_to_point_at_ones_own_data(tmp_path):
    config = shipped_files_with_dims(tmp_path, 20, 10, 1000)
    assert refusal(config, tmp_path) == (
        f"demo_data 1: {tmp_path}/input_data/demo/dataset1.npy does not exist, so the built-in demo sweep would be "
        f"written there, and the demo plate is square, so Dim3 must be a square number of nodes "
        f"(e.g. 1024 = 32 x 32), got 1000\n"
        f"    fix: to train on your own sweep, set data_path to its file and demo_data 0 in condition.txt, or "
        f"delete the data_path and demo_data lines to use input_data/dataset1.npy; for the demo, set Dim3 to a "
        f"square number")


def test_the_demo_is_written_when_nothing_else_is_there(tmp_path):
    config = shipped_files_with_dims(tmp_path, 6, 4, 16)
    written = ensure_demo_data(config.data, tmp_path)
    assert written == tmp_path / "input_data" / "demo" / "dataset1.npy"
    assert np.load(written).shape == (6, 4, 16)
    assert ensure_demo_data(config.data, tmp_path) == written  # there now: left as it is


def test_an_existing_demo_that_does_not_match_the_dims_says_how_to_use_ones_own_sweep(tmp_path):
    config = shipped_files_with_dims(tmp_path, 8, 4, 16)
    ensure_demo_sweep(tmp_path / "input_data" / "demo", DemoSweepSpec(num_cases=6, grid_size=4, num_timesteps=4))
    with pytest.raises(DataError) as caught:
        prepare_sweep(config, tmp_path)
    message = str(caught.value)
    assert "Dim1 (number of cases): " in message and "has 6 along axis 0" in message
    assert message.endswith(
        f"\n  demo_data 1 is set: if {tmp_path}/input_data/demo/dataset1.npy is the built-in demo sweep and you "
        f"meant your own, to train on your own sweep, set data_path to its file and demo_data 0 in condition.txt, "
        f"or delete the data_path and demo_data lines to use input_data/dataset1.npy")
