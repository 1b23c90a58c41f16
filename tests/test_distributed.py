"""DDP under torchrun: 2 gloo processes on CPU, tiny data, every training mode.

What is checked: the ranks end with identical weights (compared here, from the files each rank
wrote, and by the run itself against rank 0's checkpoint); the logged losses are the sample-weighted
means over both ranks' batches; validation counts every case once; 2 ranks match 1 process with the
same global batch; LC-only and end-to-end training run under DDP; and a rank killed with SIGKILL makes
torchrun restart the group, which resumes from the last checkpoint and ends with exactly the weights
of an uninterrupted run.

Run as a script (`--worker OUT`), this file is also the torchrun worker of the trainer-level test.
No product code has a test hook: the worker is this file, and the kill comes from outside.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "SimulGen-VAE.py"
VAE_EPOCHS = 10
WORKER_EPOCHS = 3
# 2 ranks vs 1 process, same global batches: float32 sums in another order (a per-rank mean of 2 cases
# then DDP's average of 2 ranks, instead of one mean of 4) differ by ~1e-7 relative per step; after 6
# AdamW steps of lr 1e-3 the weights agree to 4e-7 (measured); a wrong global batch moves them ~1e-3.
WEIGHT_TOLERANCE = 1e-5
# 2 ranks x 2 accumulated micro-batches of 1 case vs one process's batch of 4: the same gradient summed in
# another order; after 6 AdamW steps the weights agree to 1.2e-5 (measured; 7.4e-6 for 2 x 2 micro-batches in
# one process), while a wrong effective batch (2 instead of 4) moves them 9e-3.
ACCUMULATION_TOLERANCE = 5e-5

# Guards against a hung process group, not a speed check: generous, since a busy shared box runs slow.
HANG_SECONDS = 300


CONDITION_OVERRIDES = {
    "Dim1": "15", "Dim2": "8", "Dim3": "64", "Dim2_red": "8", "Dim3_end": "64",
    "Batch_size": "4", "latent_conditioner_batch": "4", "checkpoint_every": "1",
    "decoder_width": "64", "decoder_depth": "2",
}
TINY_PRESET = "data_No, init_beta_divisior, num_filter_enc, latent_conditioner_filter\n1\n4\n16 8\n16 16\n"


# ------------------------------------------------------------------ helpers
def write_condition(path: Path, extra: Optional[Dict[str, str]] = None) -> Path:
    """The shipped condition.txt with its sizes shrunk (15 cases of 8 timesteps x 8x8 nodes)."""
    from modules.config.legacy_files import with_keys

    overrides = dict(CONDITION_OVERRIDES, **(extra or {}))
    path.write_text(with_keys((REPO_ROOT / "input_data" / "condition.txt").read_text(), overrides))
    return path


def child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
           and not k.startswith("TORCHELASTIC")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(nproc: int, *args: str, max_restarts: int = 0) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            f"--max_restarts={max_restarts}", *args]


def train_command(out: str, condition: str, *extra: str) -> List[str]:
    return torchrun(2, str(SCRIPT), "--preset=1", "--device=cpu", f"--epochs={VAE_EPOCHS}", "--lc-epochs=1",
                    "--plot=2", "--quiet", f"--out={out}", f"--condition={condition}", "--preset-file=preset.txt",
                    *extra)


def run(command: List[str], cwd: Path, timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def checkpoint_digest(path: Path) -> str:
    from modules.storage.state_files import load_state
    from modules.runtime.distributed import state_digest

    return state_digest(load_state(path)["model"])


def agreement_digest(log_text: str, stage: str, epochs: int) -> str:
    """The digest the run logged after checking that both ranks hold the same weights."""
    found = re.findall(rf"{stage}: all 2 processes hold identical weights after epoch {epochs} "
                       rf"\(sha256 ([0-9a-f]{{16}})\)", log_text)
    assert len(found) == 1, log_text
    return found[0]


def epoch_lines(log_text: str, stage: str) -> List[int]:
    return [int(n) for n in re.findall(rf"  {stage} epoch (\d+)/\d+  ", log_text)]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with the tiny condition.txt and preset.txt; the demo sweep is written there on first run."""
    root = tmp_path_factory.mktemp("ddp")
    write_condition(root / "condition.txt")
    (root / "preset.txt").write_text(TINY_PRESET)
    return root


@pytest.fixture(scope="module")
def vae_run(workspace) -> Path:
    """An uninterrupted 2-process run of VAE + conditioner (the reference of the restart test)."""
    run(train_command("uninterrupted", "condition.txt"), workspace)
    return workspace / "uninterrupted"


# ------------------------------------------------------------------ end-to-end runs
def test_vae_mode_under_ddp_ranks_end_identical_and_rank0_alone_writes(vae_run):
    log = (vae_run / "train_log.txt").read_text()
    assert "device cpu, 2 processes (DDP over gloo)" in log
    # The run compared both ranks' final weights; the digest it logged is that of the saved last checkpoint.
    assert agreement_digest(log, "vae", VAE_EPOCHS) == checkpoint_digest(
        vae_run / "checkpoints" / "vae_last.pt")[:16]
    assert agreement_digest(log, "conditioner", 1) == checkpoint_digest(
        vae_run / "checkpoints" / "conditioner_last.pt")[:16]
    # Only rank 0 logs: each epoch appears once, in order.
    assert epoch_lines(log, "vae") == list(range(1, VAE_EPOCHS + 1))
    report = json.loads((vae_run / "report.json").read_text())
    assert report["vae"]["training"]["epochs_run"] == VAE_EPOCHS


def test_lc_only_mode_under_ddp_ranks_agree(vae_run, tmp_path, workspace):
    out = tmp_path / "lc_only"
    shutil.copytree(vae_run, out)
    run(train_command(str(out), "condition.txt", "--lc_only=1", "--overwrite", "--lc-epochs=2"), workspace)
    log = (out / "train_log.txt").read_text()
    assert f"VAE: using the trained model {out / 'SimulGen-VAE'}" in log
    assert agreement_digest(log, "conditioner", 2) == checkpoint_digest(out / "checkpoints" / "conditioner_last.pt")[:16]
    assert epoch_lines(log, "conditioner")[-2:] == [1, 2]


def test_end_to_end_mode_with_decoder_finetuning_under_ddp(vae_run, tmp_path, workspace):
    from modules.storage.state_files import load_state

    out = tmp_path / "e2e"
    shutil.copytree(vae_run, out)
    condition = write_condition(tmp_path / "condition_e2e.txt", {
        "use_e2e_training": "1", "e2e_finetune_decoder": "1", "e2e_vae_model_path": str(out / "SimulGen-VAE")})
    run(train_command(str(out), str(condition), "--lc_only=1", "--overwrite", "--lc-epochs=2"), workspace)
    log = (out / "train_log.txt").read_text()
    # The shipped e2e_decoder_start fresh: both ranks must draw the same new decoder (and DDP broadcasts it).
    assert "trained end-to-end with its own prediction decoder" in log
    assert agreement_digest(log, "conditioner", 2) == checkpoint_digest(out / "checkpoints" / "conditioner_last.pt")[:16]
    # The decoder was fine-tuned; the heads decode_flat() never reaches were frozen (DDP would stop on them).
    before = load_state(vae_run / "SimulGen-VAE")["model"]
    after = load_state(out / "latent_conditioner.pt")["decoder_weights"]
    assert not torch.equal(after["readout.0.weight"], before["decoder.readout.0.weight"])
    for frozen in ("prior_heads.0.weight", "posterior_heads.0.0.weight"):
        assert torch.equal(after[frozen], before["decoder." + frozen]), frozen


def test_gradient_checkpointing_trains_under_ddp(tmp_path, workspace):
    """Activation recomputation (use_reentrant=False) with DDP's gradient hooks: the ranks still agree."""
    condition = write_condition(tmp_path / "condition_checkpointing.txt", {"grad_checkpoint": "1"})
    out = tmp_path / "checkpointing"
    run(train_command(str(out), str(condition)), workspace)
    log = (out / "train_log.txt").read_text()
    assert agreement_digest(log, "vae", VAE_EPOCHS) == checkpoint_digest(out / "checkpoints" / "vae_last.pt")[:16]


def _rank_processes(tag: str, rank: int, restart_count: int) -> List[int]:
    """PIDs of this test's workers with the given RANK on the given torchrun attempt."""
    wanted = [f"SIMULGEN_TEST_TAG={tag}".encode(), f"RANK={rank}".encode(),
              f"TORCHELASTIC_RESTART_COUNT={restart_count}".encode()]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(item in environment for item in wanted):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the rank-1 process through /proc")
def test_killed_rank_restarts_the_group_which_resumes_and_ends_like_an_uninterrupted_run(vae_run, workspace):
    out = workspace / "killed"
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    env = dict(child_env(), SIMULGEN_TEST_TAG=tag)
    command = train_command("killed", "condition.txt")
    command[command.index("--max_restarts=0")] = "--max_restarts=1"
    process = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    log_file, killed = out / "train_log.txt", []
    try:
        deadline = time.monotonic() + HANG_SECONDS
        while not killed and process.poll() is None and time.monotonic() < deadline:
            # Once epoch 2 is logged, rank 1 is somewhere in epoch 3 (or writing its checkpoint).
            if log_file.is_file() and f"vae epoch 2/{VAE_EPOCHS}" in log_file.read_text():
                for pid in _rank_processes(tag, rank=1, restart_count=0):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.01)
        output, _ = process.communicate(timeout=HANG_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed, "rank 1 was not found to kill"
    assert process.returncode == 0, output[-5000:]
    log = log_file.read_text()
    resumed = re.findall(r"vae: resumed from (\S+) at epoch (\d+)", log)
    assert len(resumed) == 1, log
    assert Path(resumed[0][0]).name == "vae_last.pt"
    resumed_epoch = int(resumed[0][1])
    assert resumed_epoch >= 2  # epochs 1..(resumed_epoch - 1) came from the checkpoint, not from scratch
    after_restart = log.split("vae: resumed from")[1]
    # Training continues at the resumed epoch and never starts again from epoch 1.
    assert epoch_lines(after_restart, "vae") == list(range(resumed_epoch, VAE_EPOCHS + 1))
    report = json.loads((out / "report.json").read_text())
    assert report["vae"]["training"]["epochs_run"] == VAE_EPOCHS
    # Each rank's random stream and the optimiser came back exactly: the same weights as without the kill.
    assert checkpoint_digest(out / "checkpoints" / "vae_last.pt") == checkpoint_digest(
        vae_run / "checkpoints" / "vae_last.pt")


# ------------------------------------------------------------------ the loop itself, 2 ranks vs 1
class RecordingObjective:
    """The VAE loss on posterior means (no sampling, so 1 and 2 processes can be compared exactly),
    recording each batch's cases and loss; after the last validation it saves the weights it sees."""

    def __init__(self, out: Path, rank: int):
        from modules.config.schema import TrainConfig

        self.train = TrainConfig(recon_weight=10.0, beta_target=1e-2, init_beta_divisor=3, epochs=WORKER_EPOCHS)
        self.out, self.rank = out, rank
        self.records: List[dict] = []

    def __call__(self, model, batch, epoch):
        from modules.training.losses import kl_weight, vae_loss

        fields, cases = batch
        terms = vae_loss(model(fields, use_mean=True), fields, kl_weight(epoch, self.train), self.train)
        self.records.append({"epoch": epoch, "training": model.training, "cases": cases.tolist(),
                             "loss": terms.total.item()})
        if not model.training and epoch == WORKER_EPOCHS - 1:
            torch.save(model.state_dict(), self.out / f"final_rank{self.rank}.pt")
        return terms.total, {"loss": terms.total.item()}


def toy_vae():
    """A small VAE over [16 nodes, 6 timesteps] whose frozen basis keeps the first 6 nodes (orthonormal)."""
    from modules.config.schema import ModelConfig
    from modules.models.vae import HierarchicalVAE

    model = HierarchicalVAE(ModelConfig(encoder_filters=(8, 4), latent_dim_main=4, latent_dim_hier=2), 16, 6, 6)
    model.basis.set_modes(torch.eye(16)[:, :6], None, 1.0)
    return model


def _worker(out: Path) -> None:
    """One rank (or the single process) of test_trainer_under_ddp_...; writes what it saw to `out`."""
    from modules.runtime.distributed import setup_runtime, shutdown_runtime

    runtime = setup_runtime("cpu", amp=False, use_ddp=False)
    try:
        # In a function of its own, so its DDP models are gone before the process group is destroyed.
        _worker_steps(out, runtime)
    finally:
        shutdown_runtime(runtime)


def _worker_steps(out: Path, runtime) -> None:
    """The body of _worker: train, accumulate, budget, scale and check replicas on `runtime`, write rank<k>.json."""
    from dataclasses import replace

    import numpy as np
    from torch.utils.data import TensorDataset

    from modules.config.schema import DataConfig
    from modules.errors import SimulGenError
    from modules.training.run_log import RunLog
    from modules.runtime.distributed import unwrap
    from modules.data.prepared_sweep import fit_shared_scaler
    from modules.training.checkpointing import Checkpointer, CheckpointPaths
    from modules.training.loop import LoopSettings, Trainer

    generator = torch.Generator().manual_seed(0)
    fields = (torch.rand(11, 16, 6, generator=generator) - 0.5) * 1.4
    cases = torch.arange(11)
    train_set, val_set = TensorDataset(fields[:8], cases[:8]), TensorDataset(fields[8:], cases[8:])
    torch.manual_seed(1)
    model = toy_vae()
    objective = RecordingObjective(out, runtime.rank)
    settings = LoopSettings(name="toy", epochs=WORKER_EPOCHS, batch_size=4, learning_rate=1e-3,
                            weight_decay=1e-4, grad_clip=1.0, lr_schedule="cosine", min_lr_fraction=0.1,
                            early_stopping_patience=0, checkpoint_every=1, seed=5)
    log = RunLog(out / "log.txt", None, enabled=runtime.is_main, show_progress=False, stream=io.StringIO())
    checkpoints = Checkpointer(CheckpointPaths(out / "toy_last.pt", out / "toy_best.pt"), runtime, "toy", {}, {})
    trainer = Trainer(model, objective, settings, runtime, log, checkpoints)
    noise = torch.rand(3).tolist()  # each rank's own stream after the trainer seeded it
    trainer.fit(train_set, val_set)

    # Gradient accumulation: global batch 2 (1 per rank) x 2 micro-batches is the step of batch 4 above.
    accumulated = out / "accumulated"
    accumulated.mkdir(exist_ok=True)
    torch.manual_seed(1)
    model = toy_vae()
    checkpoints = Checkpointer(CheckpointPaths(accumulated / "toy_last.pt", accumulated / "toy_best.pt"), runtime,
                               "toy", {}, {})
    Trainer(model, RecordingObjective(accumulated, runtime.rank), replace(settings, batch_size=2,
            grad_accumulation_steps=2), runtime, log, checkpoints).fit(train_set, val_set)

    # The time budget: rank 0 alone would afford nothing (the least: 3 of 6 epochs), rank 1 everything; the
    # ranks plan on their mean allowance, so both run all 6 (the same number, or DDP would hang).
    budgeted = out / "budgeted"
    budgeted.mkdir(exist_ok=True)
    checkpoints = Checkpointer(CheckpointPaths(budgeted / "toy_last.pt", budgeted / "toy_best.pt"), runtime,
                               "toy", {}, {})
    allowance = 0.0 if runtime.rank == 0 else 1e9
    budgeted_epochs = Trainer(toy_vae(), RecordingObjective(budgeted, runtime.rank), replace(settings, epochs=6),
                              runtime, log, checkpoints, allowance).fit(train_set, val_set).epochs_run
    # Likewise a member's allowance that depends on the pace (time_budget.member_allowance).
    paced = out / "paced"
    paced.mkdir(exist_ok=True)
    checkpoints = Checkpointer(CheckpointPaths(paced / "toy_last.pt", paced / "toy_best.pt"), runtime,
                               "toy", {}, {})
    paced_epochs = Trainer(toy_vae(), RecordingObjective(paced, runtime.rank), replace(settings, epochs=6),
                           runtime, log, checkpoints, lambda pace: allowance).fit(train_set, val_set).epochs_run

    # The scaler: rank 1 is handed a different array, yet ends with rank 0's fit.
    data = DataConfig(num_cases=4, num_timesteps=2, num_nodes=3)
    array = np.arange(24, dtype=np.float32).reshape(4, 2, 3) + 100.0 * runtime.rank
    scaler = fit_shared_scaler(array, np.array([0, 1, 2]), data, runtime)

    # The replica check must notice a rank whose weights drifted.
    with torch.no_grad():
        next(unwrap(trainer.model).parameters()).add_(float(runtime.rank))
    try:
        runtime.require_identical_replicas(unwrap(trainer.model), "probe")
        replica_error = ""
    except SimulGenError as error:
        replica_error = str(error)
    (out / f"rank{runtime.rank}.json").write_text(json.dumps({
        "world_size": runtime.world_size, "records": objective.records, "noise": noise,
        "scaler_min": scaler.data_min.tolist(), "replica_error": replica_error,
        "budgeted_epochs": budgeted_epochs, "paced_epochs": paced_epochs}))


def _run_worker(out: Path, processes: int) -> List[dict]:
    out.mkdir()
    worker = [str(Path(__file__).resolve()), "--worker", str(out)]
    command = torchrun(2, *worker) if processes == 2 else [sys.executable, *worker]
    run(command, REPO_ROOT)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(processes)]


def _weighted_mean(records: List[dict]) -> float:
    return sum(r["loss"] * len(r["cases"]) for r in records) / sum(len(r["cases"]) for r in records)


def test_trainer_under_ddp_reduces_metrics_exactly_and_matches_one_process(tmp_path):
    from modules.storage.state_files import load_state

    two = _run_worker(tmp_path / "two", processes=2)
    one = _run_worker(tmp_path / "one", processes=1)
    assert [r["world_size"] for r in two] == [2, 2] and one[0]["world_size"] == 1
    history = load_state(tmp_path / "two" / "toy_last.pt")["history"]
    log = (tmp_path / "two" / "log.txt").read_text()
    for epoch in range(WORKER_EPOCHS):
        train = [[r for r in rank["records"] if r["epoch"] == epoch and r["training"]] for rank in two]
        val = [[r for r in rank["records"] if r["epoch"] == epoch and not r["training"]] for rank in two]
        # Global batch 4 = 2 per rank; 8 training cases = 2 steps per rank per epoch.
        assert [[len(r["cases"]) for r in rank] for rank in train] == [[2, 2], [2, 2]]
        # Step j of the two ranks together trains on the cases of step j of the single process.
        single = [r for r in one[0]["records"] if r["epoch"] == epoch and r["training"]]
        for step in range(2):
            assert sorted(train[0][step]["cases"] + train[1][step]["cases"]) == sorted(single[step]["cases"])
        # Validation: the 3 cases split 2 + 1, none counted twice.
        assert sorted(c for rank in val for r in rank for c in r["cases"]) == [8, 9, 10]
        # Logged = sample-weighted mean over both ranks' batches.
        expected_train = _weighted_mean(train[0] + train[1])
        expected_val = _weighted_mean(val[0] + val[1])
        assert history["train_loss"][epoch] == pytest.approx(expected_train, rel=1e-12)
        assert history["val_loss"][epoch] == pytest.approx(expected_val, rel=1e-12)
        assert f"toy epoch {epoch + 1}/{WORKER_EPOCHS}  loss {expected_train:.4g}  val_loss {expected_val:.4g}" in log
    final = [torch.load(tmp_path / "two" / f"final_rank{rank}.pt", weights_only=True) for rank in range(2)]
    single_final = torch.load(tmp_path / "one" / "final_rank0.pt", weights_only=True)
    for name, value in final[0].items():
        assert torch.equal(value, final[1][name]), name
        assert torch.allclose(value, single_final[name], rtol=0, atol=WEIGHT_TOLERANCE), name
    assert f"toy: all 2 processes hold identical weights after epoch {WORKER_EPOCHS}" in log
    # 2 ranks x 1 case x 2 accumulated micro-batches (DDP syncing only the last) = one process's batch of 4
    accumulated = [torch.load(tmp_path / "two" / "accumulated" / f"final_rank{rank}.pt", weights_only=True)
                   for rank in range(2)]
    for name, value in accumulated[0].items():
        assert torch.equal(value, accumulated[1][name]), name
        assert torch.allclose(value, single_final[name], rtol=0, atol=ACCUMULATION_TOLERANCE), name
    assert two[0]["noise"] != two[1]["noise"]
    assert [rank["budgeted_epochs"] for rank in two] == [6, 6] and one[0]["budgeted_epochs"] == 3
    assert [rank["paced_epochs"] for rank in two] == [6, 6] and one[0]["paced_epochs"] == 3
    assert two[0]["scaler_min"] == two[1]["scaler_min"] == [0.0, 1.0, 2.0]
    for rank in two:
        assert "the 2 processes ended with different weights" in rank["replica_error"]
        assert "different on rank(s) [1]" in rank["replica_error"]
    assert one[0]["replica_error"] == ""


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(Path(sys.argv[2]))
