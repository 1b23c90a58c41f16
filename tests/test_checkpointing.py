"""A stage's checkpoints: 'last' and 'best' by default, the N newest end-of-epoch ones with keep_checkpoints N."""
from __future__ import annotations

import shutil

import pytest
import torch

from modules.config.legacy_files import load_run_config
from modules.config.schema import TrainConfig
from modules.errors import ConfigError
from modules.storage.state_files import load_state
from test_trainer import NoisyObjective, build, make_data
from tiny_sweep import tiny_condition, tiny_preset


def checkpoint_files(folder):
    return sorted(path.name for path in folder.iterdir() if path.suffix == ".pt")


def test_by_default_only_last_and_best_are_kept(tmp_path):
    assert TrainConfig().keep_checkpoints == 1
    build(tmp_path, NoisyObjective()).fit(*make_data())
    assert checkpoint_files(tmp_path) == ["toy_best.pt", "toy_last.pt"]


def test_keep_n_keeps_the_newest_end_of_epoch_checkpoints_and_each_resumes(tmp_path):
    train, val = make_data()
    reference = build(tmp_path / "straight", NoisyObjective())
    reference.fit(train, val)
    kept = build(tmp_path / "kept", NoisyObjective(), keep=3)
    kept.fit(train, val)
    folder = tmp_path / "kept"
    assert checkpoint_files(folder) == ["toy_best.pt", "toy_epoch_0004.pt", "toy_epoch_0005.pt", "toy_epoch_0006.pt",
                                        "toy_last.pt"]
    for epoch in (4, 5, 6):
        assert load_state(folder / f"toy_epoch_{epoch:04d}.pt")["epoch"] == epoch
    assert (folder / "toy_epoch_0006.pt").read_bytes() == (folder / "toy_last.pt").read_bytes()
    # an older checkpoint is a complete one: resuming it gives the uninterrupted run's weights
    shutil.copy(folder / "toy_epoch_0004.pt", tmp_path / "older.pt")
    resumed = build(folder, NoisyObjective(), keep=3)
    torch.manual_seed(99)
    resumed.resume(tmp_path / "older.pt")
    resumed.fit(train, val)
    for key, value in resumed.state()["model"].items():
        assert torch.equal(value, reference.state()["model"][key]), key


def test_epoch_files_of_an_earlier_longer_run_are_not_kept(tmp_path):
    for epoch in (7, 8):  # left in the folder by an earlier run with more epochs
        (tmp_path / f"toy_epoch_{epoch:04d}.pt").write_bytes(b"old")
    (tmp_path / "notes.pt").write_bytes(b"the user's")
    build(tmp_path, NoisyObjective(), keep=2).fit(*make_data())
    assert checkpoint_files(tmp_path) == ["notes.pt", "toy_best.pt", "toy_epoch_0005.pt", "toy_epoch_0006.pt",
                                          "toy_last.pt"]


def test_keep_checkpoints_is_read_from_condition_txt_and_checked(tmp_path):
    (tmp_path / "preset.txt").write_text(tiny_preset())
    condition = tmp_path / "condition.txt"
    condition.write_text(tiny_condition(tmp_path / "data", extra="keep_checkpoints\t3\n"))
    config, _ = load_run_config(tmp_path / "preset.txt", condition)
    assert config.train.keep_checkpoints == 3
    condition.write_text(tiny_condition(tmp_path / "data", extra="keep_checkpoints\t0\n"))
    line = condition.read_text().splitlines().index("keep_checkpoints\t0") + 1
    with pytest.raises(ConfigError, match=rf"condition.txt:{line}, key 'keep_checkpoints': must be 1 or more, got 0"):
        load_run_config(tmp_path / "preset.txt", condition)


def test_best_is_written_with_the_next_last_not_on_every_improvement(tmp_path):
    """An improving epoch between 'last' writes is held in memory: the run writes 'best' once per 'last' write
    at most, and at the end it holds the best epoch's weights."""
    trainer = build(tmp_path, NoisyObjective(), epochs=12, checkpoint_every=4)
    writes = []
    save = trainer.checkpoints._save
    trainer.checkpoints._save = lambda path, state: (writes.append((path.name, state["epoch"])), save(path, state))
    result = trainer.fit(*make_data())
    improving = [epoch for epoch, loss in enumerate(result.history["val_loss"], start=1)
                 if loss == min(result.history["val_loss"][:epoch])]
    assert len(improving) > 4  # the toy problem improves in most epochs: the case that used to write each time
    assert [epoch for name, epoch in writes if name == "toy_last.pt"] == [1, 4, 8, 12]
    best_writes = [epoch for name, epoch in writes if name == "toy_best.pt"]
    assert len(best_writes) <= 4 and best_writes[-1] == result.best_epoch + 1
    best = load_state(tmp_path / "toy_best.pt")
    for key, value in best["model"].items():
        assert torch.equal(value, trainer.state()["model"][key]), key  # fit() ends on the best epoch's weights


def test_a_remembered_best_is_a_copy_written_only_after_last(tmp_path):
    trainer = build(tmp_path, NoisyObjective())
    checkpoints = trainer.checkpoints
    checkpoints.remember_best(trainer.state())
    remembered = trainer.state()["model"]["weight"].clone()
    with torch.no_grad():
        trainer.model.weight.add_(1.0)  # training goes on after the improvement
    assert checkpoint_files(tmp_path) == []  # nothing on disk before the next 'last'
    checkpoints.save_last(trainer.state())
    assert checkpoint_files(tmp_path) == ["toy_best.pt", "toy_last.pt"]
    assert torch.equal(load_state(tmp_path / "toy_best.pt")["model"]["weight"], remembered)
    assert torch.equal(load_state(tmp_path / "toy_last.pt")["model"]["weight"], remembered + 1.0)
    # written once: a second 'last' does not write the same 'best' again
    (tmp_path / "toy_best.pt").unlink()
    checkpoints.save_last(trainer.state())
    assert checkpoint_files(tmp_path) == ["toy_last.pt"]
