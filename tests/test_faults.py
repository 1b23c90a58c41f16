"""Faults and hostile inputs through the whole command: kill -9 during training and during a checkpoint
write, a full disk, a NaN loss, a constant node, Inf in the data, a pickle or checkpoint that would run
code, a checkpoint of another config. Each test asserts the message and that nothing on disk was lost.

Issue-6 lines already covered at the module level (config files, CSV/PNG inputs, truncated checkpoints,
flags) are tested in their modules' test files; the README table maps every line to its test.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.storage import atomic_files
from modules.storage.state_files import load_state, save_state
from modules.data.demo_sweep import DemoSweepSpec, ensure_demo_sweep
from modules.training.projected_training import ProjectedVAEObjective
from tiny_sweep import load_entry, tiny_condition, tiny_preset

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 20  # long enough that a kill after epoch 2 lands mid-training (about 0.2 s per epoch here)
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

def write_config(folder: Path, data_dir: Path, epochs: int = EPOCHS, filters: str = "16 8", **kwargs) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preset.txt").write_text(tiny_preset(filters))
    (folder / "condition.txt").write_text(tiny_condition(data_dir, epochs, lc_epochs=1, **kwargs))
    return ["--preset-file", str(folder / "preset.txt"), "--condition", str(folder / "condition.txt"),
            "--device", "cpu", "--quiet"]


def snapshot(folder: Path, skip=("train_log.txt",)) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def temp_files(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def entry():
    torch.set_num_threads(1)  # the same as the OMP_NUM_THREADS=1 child, so runs compare bit for bit
    return load_entry("simulgen_entry_faults")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The demo sweep (16 cases, 8 timesteps, 8 x 8 nodes), written once for every test here."""
    folder = tmp_path_factory.mktemp("data")
    ensure_demo_sweep(folder, DemoSweepSpec(num_cases=16, grid_size=8, num_timesteps=8))
    return folder


@pytest.fixture(scope="module")
def straight_run(entry, data_dir, tmp_path_factory):
    """An uninterrupted run: the reference for resume, and a finished run to resume wrongly."""
    root = tmp_path_factory.mktemp("straight")
    args = write_config(root, data_dir)
    assert entry.main(args + ["--out", str(root / "out")]) == 0
    return root / "out", args


@pytest.fixture(scope="module")
def killed_run(data_dir, straight_run, tmp_path_factory):
    """The same run in a child process, killed with SIGKILL once epoch 2 is logged and a checkpoint exists."""
    root = tmp_path_factory.mktemp("killed")
    args = write_config(root, data_dir)
    out = root / "out"
    log, last = out / "train_log.txt", out / "checkpoints" / "vae_last.pt"
    with open(root / "child.txt", "wb") as output:
        child = subprocess.Popen([sys.executable, str(REPO / "SimulGen-VAE.py")] + args + ["--out", str(out)],
                                 cwd=root, env=CHILD_ENV, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300  # a hang guard, not a speed check
        while time.monotonic() < deadline and child.poll() is None:
            epochs = [int(n) for n in re.findall(r"vae epoch (\d+)/", log.read_text())] if log.is_file() else []
            if epochs and max(epochs) >= 2 and last.is_file():
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, (root / "child.txt").read_text()
    return out, args


# ------------------------------------------------------------------------------------------------ kill -9

def test_kill_9_mid_training_keeps_the_checkpoint_and_resume_equals_an_uninterrupted_run(
        entry, straight_run, killed_run, tmp_path):
    reference, _ = straight_run
    killed, args = killed_run
    out = tmp_path / "out"
    shutil.copytree(killed, out)
    stopped = load_state(out / "checkpoints" / "vae_last.pt")  # the checkpoint survived the kill and loads
    assert 1 <= stopped["epoch"] < EPOCHS and not stopped["finished"]
    assert not (out / "SimulGen-VAE").exists()

    assert entry.main(args + ["--out", str(out), "--resume"]) == 0
    log = (out / "train_log.txt").read_text()
    assert f"resumed from {out / 'checkpoints' / 'vae_last.pt'} at epoch {stopped['epoch'] + 1}" in log
    # the sweep was not projected again: the first run's projection was read back (and gave the same run)
    assert f"VAE: resuming: projection read from {out / 'projection.pt'}" in log
    # The bundle holds the best epoch's weights (here possibly the PCA start), so the last checkpoint is
    # compared too: its weights, optimiser moments and history show every epoch was trained identically.
    for name in ("SimulGen-VAE", "checkpoints/vae_last.pt", "latent_conditioner.pt"):
        expected, resumed = load_state(reference / name), load_state(out / name)
        for key, value in expected["model"].items():
            assert torch.equal(resumed["model"][key], value), (name, key)
    expected, resumed = load_state(reference / "checkpoints/vae_last.pt"), load_state(out / "checkpoints/vae_last.pt")
    assert resumed["history"] == expected["history"] and resumed["epoch"] == EPOCHS
    for index, moments in expected["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][index]["exp_avg"], moments["exp_avg"]), index
    latents, expected_latents = np.load(out / "latent_vectors.npz"), np.load(reference / "latent_vectors.npz")
    assert np.array_equal(latents["flat"], expected_latents["flat"])
    assert temp_files(out) == []  # a temp file the kill may have left mid-write was removed by the next save


KILLED_WRITER = """
import io, os, signal, sys
import torch
from modules.storage.state_files import save_state

target = sys.argv[1]
save_state(target, {"format": "x", "epoch": 1, "model": {"w": torch.arange(1000.0)}})
real_save = torch.save

def dies_half_way(state, stream):
    buffer = io.BytesIO()
    real_save(state, buffer)
    stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dies_half_way
save_state(target, {"format": "x", "epoch": 2, "model": {"w": torch.zeros(1_000_000)}})
"""


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "vae_last.pt"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=REPO, env=CHILD_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    previous = load_state(target)
    assert previous["epoch"] == 1 and torch.equal(previous["model"]["w"], torch.arange(1000.0))
    # SIGKILL skips every cleanup: the half-written temp file is left beside the intact checkpoint.
    leftovers = temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".vae_last.pt.")
    assert 1_000_000 < (tmp_path / leftovers[0]).stat().st_size < 4_000_000 + 1000
    # Files that are not this target's temp files are never touched.
    keep = [tmp_path / ".other.pt.abcd1234.tmp", tmp_path / ".vae_last.pt.notes.tmp", tmp_path / "vae_last.pt.bak"]
    for path in keep:
        path.write_text("user file")

    save_state(target, {"format": "x", "epoch": 3, "model": {"w": torch.ones(3)}})
    assert load_state(target)["epoch"] == 3
    assert not (tmp_path / leftovers[0]).exists()  # the next successful save removed the stale temp file
    assert all(path.read_text() == "user file" for path in keep)


# ------------------------------------------------------------------------------------------- full disk, NaN

def test_full_disk_while_writing_a_checkpoint_stops_with_a_clear_error_and_keeps_the_previous_one(
        entry, data_dir, tmp_path, monkeypatch, capsys):
    args = write_config(tmp_path, data_dir, epochs=5)
    out = tmp_path / "out"
    real_replace = os.replace
    seen = {"count": 0, "previous": None}

    def disk_full_on_third_last_checkpoint(source, target):
        if Path(target).name == "vae_last.pt":
            seen["count"] += 1
            if seen["count"] == 3:
                seen["previous"] = Path(target).read_bytes()
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(atomic_files.os, "replace", disk_full_on_third_last_checkpoint)
    assert entry.main(args + ["--out", str(out)]) == 1
    message = capsys.readouterr().err
    last = out / "checkpoints" / "vae_last.pt"
    assert f"error: could not write {last}: the disk is full. The previous version of the file, if any, " \
           f"is unchanged; free space or choose another --out folder" in message
    assert last.read_bytes() == seen["previous"] and load_state(last)["epoch"] == 2
    assert temp_files(out) == [] and not (out / "SimulGen-VAE").exists()


def test_nan_loss_through_the_command_stops_with_guidance_and_keeps_the_last_good_checkpoint(
        entry, data_dir, tmp_path, monkeypatch, capsys):
    args = write_config(tmp_path, data_dir, epochs=5)
    out = tmp_path / "out"
    original = ProjectedVAEObjective.__call__
    calls = {"training": 0}

    def nan_at_epoch_3(self, model, batch, epoch):
        loss, metrics = original(self, model, batch, epoch)
        if model.training:
            calls["training"] += 1
            if calls["training"] == 7:  # 3 batches per epoch: epoch 3, batch 1
                loss = loss * float("nan")
        return loss, metrics

    monkeypatch.setattr(ProjectedVAEObjective, "__call__", nan_at_epoch_3)
    assert entry.main(args + ["--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert "error: vae: the loss became nan at epoch 3, batch 1; training stopped. The last good checkpoints " \
           f"stay in {out / 'checkpoints'}" in message
    assert "To fix: lower LearningR (now 0.003) or alpha (now 100)" in message and "add --resume" in message
    last = load_state(out / "checkpoints" / "vae_last.pt")
    assert last["epoch"] == 2 and not last["finished"]
    assert all(torch.isfinite(value).all() for value in last["model"].values())
    assert not (out / "SimulGen-VAE").exists()


# ------------------------------------------------------------------------------------------------ bad data

def test_a_constant_node_trains_without_nan_and_is_reconstructed_exactly(entry, data_dir, tmp_path):
    fields = np.load(data_dir / "dataset1.npy")
    fields[:, :, 10] = 42.5
    np.save(tmp_path / "constant_node.npy", fields)
    args = write_config(tmp_path, data_dir, epochs=3, data_file=str(tmp_path / "constant_node.npy"), demo=0)
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 0
    history = load_state(out / "checkpoints" / "vae_last.pt")["history"]
    assert all(np.isfinite(values).all() for values in history.values())
    bundle = load_state(out / "SimulGen-VAE")
    assert all(torch.isfinite(value).all() for value in bundle["model"].values())
    assert bundle["scaler"]["data_min"][10] == bundle["scaler"]["data_max"][10] == 42.5
    assert entry.main(["reconstruct", "--model", str(out), "--data", str(tmp_path / "constant_node.npy"),
                       "--out", str(tmp_path / "recon.npy"), "--device", "cpu"]) == 0
    recon = np.load(tmp_path / "recon.npy")
    assert np.isfinite(recon).all() and (recon[:, :, 10] == 42.5).all()


def test_inf_in_the_dataset_names_case_and_timestep_and_writes_no_model(entry, data_dir, tmp_path, capsys):
    fields = np.load(data_dir / "dataset1.npy")
    fields[5, 3, 10] = np.inf
    path = tmp_path / "with_inf.npy"
    np.save(path, fields)
    args = write_config(tmp_path, data_dir, epochs=3, data_file=str(path), demo=0)
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert f"{path} holds 1 non-finite value (0 NaN, 1 Inf)" in message
    assert "the first is inf at case 5, timestep 3, node 10" in message and "fix: repair or drop" in message
    assert np.array_equal(np.load(path), fields, equal_nan=True)  # the user's file is untouched
    assert not out.exists() or list(out.iterdir()) == []  # no model, checkpoint, log, report or settings file


class _CreatesFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_legacy_pickle_that_would_create_a_file_is_refused_without_running(entry, data_dir, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "dataset1.pickle"
    path.write_bytes(pickle.dumps({"fields": _CreatesFile(str(marker))}))
    args = write_config(tmp_path, data_dir, epochs=3, data_file=str(path), demo=0)
    out = tmp_path / "out"
    assert entry.main(args + ["--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert f"refused to load {path}: it contains " in message and "io.open" in message
    assert "which is not a numpy array; re-save the data with numpy.save" in message
    assert not marker.exists()
    # The data are checked before anything is written to OUT.
    assert not out.exists() or list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------------- models

def test_reconstruct_refuses_a_model_file_that_would_run_code(entry, data_dir, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save({"format": "simulgenvae-vae-1", "payload": _CreatesFile(str(marker))}, model_dir / "SimulGen-VAE")
    before = (model_dir / "SimulGen-VAE").read_bytes()
    assert not marker.exists()
    target = tmp_path / "recon.npy"
    assert entry.main(["reconstruct", "--model", str(model_dir), "--data", str(data_dir / "dataset1.npy"),
                       "--out", str(target), "--device", "cpu"]) == 1
    message = capsys.readouterr().err
    assert f"{model_dir / 'SimulGen-VAE'}: refused to load: it holds Python objects other than tensors" in message
    assert "(loaded with weights_only=True)" in message
    assert not marker.exists() and not target.exists()
    assert (model_dir / "SimulGen-VAE").read_bytes() == before


@pytest.mark.parametrize("source, checkpoint_name",
                         [("finished", "SimulGen-VAE"), ("killed", "checkpoints/vae_last.pt")])
def test_resume_with_other_filters_is_refused_naming_the_key_and_nothing_is_overwritten(
        entry, data_dir, straight_run, killed_run, tmp_path, capsys, source, checkpoint_name):
    previous, _ = straight_run if source == "finished" else killed_run
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    for stale in temp_files(out):  # a kill can land mid-write; its leftover is not part of this test
        next(out.rglob(stale)).unlink()
    before = snapshot(out)
    log_before = (out / "train_log.txt").read_text()
    args = write_config(tmp_path / "changed", data_dir, filters="16 4")
    assert entry.main(args + ["--out", str(out), "--resume"]) == 1
    message = capsys.readouterr().err
    assert f"{out / checkpoint_name}: this " in message and "was trained with different settings" in message
    # The bundle check lists the model section's keys, the checkpoint check the whole run's ("model.").
    assert "encoder_filters: saved (16, 8), now (16, 4)" in message
    assert "Restore those settings in preset.txt/condition.txt, or train a new model with --out NEW_FOLDER" in message
    # config.json too: a refused --resume must leave the finished run's settings file as it was.
    assert snapshot(out) == before
    assert (out / "train_log.txt").read_text().startswith(log_before)
