"""The one training loop: learning, exact resume after an interrupt, the NaN guard, early stopping, the time
budget."""
from __future__ import annotations

import io
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from modules.storage.state_files import load_state
from modules.errors import TrainingDivergedError, TrainingInterrupted
from modules.training.run_log import RunLog
from modules.runtime.distributed import Runtime
from modules.training.checkpointing import Checkpointer, CheckpointPaths
from modules.training.loop import LoopSettings, Trainer, make_adamw


def make_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(40, 3, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return TensorDataset(inputs[:32], targets[:32]), TensorDataset(inputs[32:], targets[32:])


def settings(**overrides) -> LoopSettings:
    values = dict(name="toy", epochs=6, batch_size=8, learning_rate=0.1, weight_decay=0.0, grad_clip=5.0,
                  lr_schedule="cosine", min_lr_fraction=0.1, early_stopping_patience=0, checkpoint_every=1, seed=3)
    values.update(overrides)
    return LoopSettings(**values)


class NoisyObjective:
    """MSE plus a random term, so a resume that lost the RNG state would give different weights."""

    def __init__(self, interrupt_at_call: int = -1, nan_at_call: int = -1):
        self.calls = 0
        self.interrupt_at_call = interrupt_at_call
        self.nan_at_call = nan_at_call

    def __call__(self, model, batch, epoch):
        inputs, targets = batch
        if model.training:
            self.calls += 1
            if self.calls == self.interrupt_at_call:
                os.kill(os.getpid(), signal.SIGINT)
        noise = 0.01 * torch.randn(targets.shape)
        loss = torch.mean((model(inputs) + noise - targets) ** 2)
        if model.training and self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return loss, {"loss": loss.item()}


def build(tmp_path: Path, objective, keep: int = 1, allowance_seconds: float = math.inf, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    paths = CheckpointPaths(last=tmp_path / "toy_last.pt", best=tmp_path / "toy_best.pt")
    log = RunLog(tmp_path / "log.txt", None, show_progress=False, stream=io.StringIO())
    runtime = Runtime(device=torch.device("cpu"))
    checkpoints = Checkpointer(paths, runtime, "toy", must_match={"width": 3}, config_snapshot={"note": "test"},
                               keep=keep)
    return Trainer(model, objective, settings(**overrides), runtime, log, checkpoints, allowance_seconds)


def test_loss_falls_and_best_checkpoint_is_the_lowest_validation(tmp_path):
    trainer = build(tmp_path, NoisyObjective())
    train, val = make_data()
    result = trainer.fit(train, val)
    history = result.history
    assert history["train_loss"][-1] < 0.2 * history["train_loss"][0]
    assert result.best_epoch == min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    best = load_state(tmp_path / "toy_best.pt")
    assert best["epoch"] == result.best_epoch + 1
    assert math.isclose(best["best_val_loss"], min(history["val_loss"]))
    assert len(history["lr"]) == 6 and history["lr"][-1] < history["lr"][0]
    assert "toy epoch 6/6" in (tmp_path / "log.txt").read_text()


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    train, val = make_data()
    reference = build(tmp_path / "a", NoisyObjective())
    reference.fit(train, val)
    expected = {k: v.clone() for k, v in reference.state()["model"].items()}
    expected_history = reference.result.history

    interrupted = build(tmp_path / "b", NoisyObjective(interrupt_at_call=11))  # epoch 3, batch 3 of 4
    with pytest.raises(TrainingInterrupted, match="stopped at epoch 3, batch 4.*--resume"):
        interrupted.fit(train, val)
    saved = load_state(tmp_path / "b" / "toy_last.pt")
    assert (saved["epoch"], saved["batches_done"]) == (2, 3)

    resumed = build(tmp_path / "b", NoisyObjective())
    torch.manual_seed(1234)  # a fresh process would have another RNG state: resume must restore it
    resumed.resume(tmp_path / "b" / "toy_last.pt")
    resumed.fit(train, val)
    # fit() ends on the best epoch's weights in both runs
    for key, value in resumed.state()["model"].items():
        assert torch.equal(value, expected[key]), key
    assert resumed.result.history["val_loss"] == expected_history["val_loss"]


class MeanSquaredError:
    """A loss that is a mean over the batch's cases and draws nothing random."""

    def __call__(self, model, batch, epoch):
        inputs, targets = batch
        loss = torch.mean((model(inputs) - targets) ** 2)
        return loss, {"loss": loss.item()}


@pytest.mark.parametrize("cases", [32, 36])  # 36: the epoch's last group is one short batch of 4
def test_accumulated_micro_batches_take_the_step_of_one_batch_of_all_their_cases(tmp_path, cases):
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(cases, 3, generator=generator)
    data = TensorDataset(inputs, inputs @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3)
    whole = build(tmp_path / "whole", MeanSquaredError(), batch_size=16, epochs=2, grad_clip=0.5)
    accumulated = build(tmp_path / "micro", MeanSquaredError(), batch_size=4, grad_accumulation_steps=4, epochs=2,
                        grad_clip=0.5)
    for trainer in (whole, accumulated):
        trainer.fit(data, data)
    for key, value in whole.state()["model"].items():
        torch.testing.assert_close(accumulated.state()["model"][key], value, rtol=1e-5, atol=1e-6)
    # a different result without the accumulation: the test can tell them apart
    single = build(tmp_path / "single", MeanSquaredError(), batch_size=4, epochs=2, grad_clip=0.5)
    single.fit(data, data)
    assert not torch.allclose(single.state()["model"]["weight"], whole.state()["model"]["weight"], atol=1e-3)


def test_an_interrupt_inside_an_accumulation_group_resumes_exactly(tmp_path):
    train, val = make_data()  # 32 cases, batch 4: 8 batches, 3 groups of 3 (the last of 2) per epoch
    reference = build(tmp_path / "a", NoisyObjective(), batch_size=4, grad_accumulation_steps=3)
    reference.fit(train, val)
    interrupted = build(tmp_path / "b", NoisyObjective(interrupt_at_call=8 + 4), batch_size=4,
                        grad_accumulation_steps=3)
    with pytest.raises(TrainingInterrupted, match="stopped at epoch 2, batch 7"):
        interrupted.fit(train, val)  # asked during batch 4 of epoch 2: stops after its group, at batch 6
    assert load_state(tmp_path / "b" / "toy_last.pt")["batches_done"] == 6
    resumed = build(tmp_path / "b", NoisyObjective(), batch_size=4, grad_accumulation_steps=3)
    torch.manual_seed(99)
    resumed.resume(tmp_path / "b" / "toy_last.pt")
    resumed.fit(train, val)
    for key, value in reference.state()["model"].items():
        assert torch.equal(resumed.state()["model"][key], value), key
    assert resumed.result.history["val_loss"] == reference.result.history["val_loss"]


def test_ddp_syncs_gradients_only_on_the_last_micro_batch_of_a_group(tmp_path):
    calls = []

    class RecordingRuntime(Runtime):
        def gradient_sync(self, model, sync):
            calls.append(sync)
            return super().gradient_sync(model, sync)

    trainer = build(tmp_path, MeanSquaredError(), batch_size=8, grad_accumulation_steps=3, epochs=1)
    trainer.runtime = RecordingRuntime(device=torch.device("cpu"))
    trainer.fit(*make_data())
    assert calls == [False, False, True, True]  # 4 batches: a group of 3, then one of 1


def test_memory_is_shown_logged_to_tensorboard_and_warned_about_once_per_epoch_when_low(tmp_path, monkeypatch):
    from modules.runtime import memory_monitor

    class Machine:  # 1 GiB of 32 GiB left: under the default fraction 0.1
        available, total = 2 ** 30, 32 * 2 ** 30

    monkeypatch.setattr(memory_monitor.psutil, "virtual_memory", lambda: Machine())
    scalars = []

    class Recording(RunLog):
        def scalars(self, stage, values, step):
            scalars.append(values)

    trainer = build(tmp_path, MeanSquaredError(), epochs=2, name="vae")
    trainer.log = Recording(tmp_path / "log.txt", None, show_progress=False, stream=io.StringIO())
    trainer.fit(*make_data())
    log = (tmp_path / "log.txt").read_text()
    warnings = [line for line in log.splitlines() if "memory is running low" in line]
    assert len(warnings) == 2 and "vae epoch 1:" in warnings[0] and "vae epoch 2:" in warnings[1]
    assert ("1.00 GiB of 32.00 GiB memory available (3%), under memory_warning_fraction 0.1" in warnings[0]
            and "lower Batch_size (now 8) and raise grad_accumulation_steps" in warnings[0]
            and "run with --load_all=0 to stream cases" in warnings[0])
    last_epoch = next(line for line in log.splitlines() if "vae epoch 2/2" in line)
    assert "  mem " in last_epoch and "G/peak " in last_epoch
    assert scalars[-1]["memory/process_mib"] > 0 and scalars[-1]["memory/available_mib"] == 1024


def test_a_streamed_run_training_on_in_memory_numbers_is_not_told_to_stream(tmp_path, monkeypatch):
    """--load_all=0 whose stage trains on numbers held in memory (coefficients, latents): no --load_all advice,
    and no cache_cases advice without a case cache."""
    from modules.runtime import memory_monitor

    class Machine:
        available, total = 2 ** 30, 32 * 2 ** 30

    monkeypatch.setattr(memory_monitor.psutil, "virtual_memory", lambda: Machine())
    build(tmp_path, MeanSquaredError(), epochs=1, name="vae", sweep_in_memory=False).fit(*make_data())
    warning = next(line for line in (tmp_path / "log.txt").read_text().splitlines() if "running low" in line)
    assert "lower Batch_size (now 8)" in warning and "--load_all" not in warning and "cache_cases" not in warning


def test_nan_loss_stops_with_guidance_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = build(tmp_path, NoisyObjective(nan_at_call=10), divergence_hint="lower LearningR")
    train, val = make_data()
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 3, batch 2.*lower LearningR"):
        trainer.fit(train, val)
    last = load_state(tmp_path / "toy_last.pt")
    assert last["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path):
    trainer = build(tmp_path, NoisyObjective(), epochs=1)
    trainer.fit(*make_data())
    other = build(tmp_path, NoisyObjective(), epochs=1)
    other.checkpoints.must_match = {"width": 4}
    with pytest.raises(Exception, match="width: saved 3, now 4"):
        other.resume(tmp_path / "toy_last.pt")


def test_early_stopping_stops_after_patience(tmp_path):
    trainer = build(tmp_path, NoisyObjective(), epochs=50, learning_rate=1e-6, lr_schedule="constant",
                    early_stopping_patience=2)
    train, val = make_data()
    # with a learning rate this small validation hardly moves: it stops long before epoch 50
    trainer.settings = settings(epochs=50, learning_rate=1e-6, lr_schedule="constant", early_stopping_patience=2)
    result = trainer.fit(train, val)
    assert result.stopped_early or result.epochs_run == 50
    if result.stopped_early:
        assert result.epochs_run - 1 - result.best_epoch == 2


def test_a_start_no_epoch_beats_is_kept(tmp_path):
    """evaluate_start: weights that begin at a good solution survive a training that only makes them worse."""
    train, val = make_data()
    trainer = build(tmp_path, NoisyObjective(), epochs=3, learning_rate=5.0, grad_clip=0.0, lr_schedule="constant",
                    evaluate_start=True)
    model = trainer.model
    with torch.no_grad():  # the exact solution of make_data's linear relation
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        model.bias.fill_(0.3)
    result = trainer.fit(train, val)
    assert result.best_epoch == -1
    assert torch.allclose(model.weight, torch.tensor([[1.0, -2.0, 0.5]])) and torch.allclose(model.bias, torch.tensor([0.3]))
    assert all(v > result.best_val_loss for v in result.history["val_loss"])
    assert "before training, validation loss" in (tmp_path / "log.txt").read_text()


def test_both_stages_take_their_settings_from_the_config_the_same_way():
    from modules.config.schema import ConditionerConfig, RunConfig, TrainConfig

    config = RunConfig(train=TrainConfig(epochs=7, batch_size=8, learning_rate=0.01, lr_schedule="constant",
                                         min_lr_fraction=0.2, grad_clip=2.0, checkpoint_every=3, seed=5),
                       conditioner=ConditionerConfig(epochs=11, batch_size=4, learning_rate=0.002, weight_decay=0.5,
                                                     early_stopping_patience=6))
    vae = LoopSettings.for_stage(config, "vae", divergence_hint="lower LearningR", evaluate_start=True)
    lc = LoopSettings.for_stage(config, "conditioner", divergence_hint="lower latent_conditioner_lr")
    assert (vae.name, vae.epochs, vae.batch_size, vae.learning_rate, vae.evaluate_start) == ("vae", 7, 8, 0.01, True)
    assert (lc.name, lc.epochs, lc.batch_size, lc.learning_rate, lc.weight_decay, lc.early_stopping_patience) == \
        ("conditioner", 11, 4, 0.002, 0.5, 6)
    # the schedule, clipping, checkpoint interval and seed are the run's, for the conditioner too
    for stage in (vae, lc):
        assert (stage.lr_schedule, stage.min_lr_fraction, stage.grad_clip, stage.checkpoint_every, stage.seed) == \
            ("constant", 0.2, 2.0, 3, 5)


def test_progress_bars_switch_themselves_off_when_output_is_not_a_terminal(tmp_path, capsys):
    trainer = build(tmp_path, NoisyObjective(), epochs=2)
    trainer.log = RunLog(tmp_path / "log.txt", None, show_progress=True, stream=io.StringIO())
    trainer.fit(*make_data())
    captured = capsys.readouterr()  # pytest's capture is not a terminal, as a pipe or a log file is not
    assert "it/s" not in captured.err and "%|" not in captured.err


def test_the_vae_stage_progress_says_what_the_run_still_does_after_it():
    from modules.config.schema import ConditionerConfig, RunConfig, TrainConfig
    from modules.training.loop import LoopSettings

    config = RunConfig(conditioner=ConditionerConfig(epochs=77))
    assert LoopSettings.for_stage(config, "vae", "").still_to_come == "+ conditioner, 77 epochs, and the report"
    assert LoopSettings.for_stage(config, "conditioner", "").still_to_come == "+ the report"
    budgeted = RunConfig(conditioner=ConditionerConfig(epochs=77), train=TrainConfig(training_minutes=15))
    assert LoopSettings.for_stage(budgeted, "vae", "").still_to_come == \
        "+ conditioner, 77 epochs, and the report (training within 15 min: training_minutes)"


def test_training_steps_run_under_bf16_autocast_but_validation_in_fp32(tmp_path):
    class DtypeRecorder:
        seen = {"train": set(), "val": set()}

        def __call__(self, model, batch, epoch):
            output = model(batch[0])
            self.seen["train" if model.training else "val"].add(output.dtype)
            loss = torch.mean((output.float() - batch[1]) ** 2)
            return loss, {"loss": loss.item()}

    trainer = build(tmp_path, DtypeRecorder(), epochs=1)
    trainer.runtime.amp_dtype = torch.bfloat16  # what --amp picks on a bf16-capable GPU
    trainer.fit(*make_data())
    assert DtypeRecorder.seen == {"train": {torch.bfloat16}, "val": {torch.float32}}


def test_the_last_checkpoint_is_written_after_epoch_1_and_before_the_first_best(tmp_path, monkeypatch):
    trainer = build(tmp_path, NoisyObjective(), epochs=6, checkpoint_every=4)
    written = []
    original = trainer.checkpoints._save
    monkeypatch.setattr(trainer.checkpoints, "_save", lambda path, state: (
        written.append((path.name.removeprefix("toy_").removesuffix(".pt"), state["epoch"])), original(path, state))[1])
    trainer.fit(*make_data())
    assert [epoch for kind, epoch in written if kind == "last"] == [1, 4, 6]
    assert written.index(("last", 1)) < written.index(("best", 1))


class EpochsAwareObjective(NoisyObjective):
    """Records what the loop tells it of the stage's length (as the VAE objectives do, for the KL warm-up)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.epochs_told = []

    def set_epochs(self, epochs):
        self.epochs_told.append(epochs)


def test_a_spent_time_budget_keeps_the_least_epochs_and_anneals_the_schedule_over_them(tmp_path):
    """An allowance of 0 s affords nothing, at any pace: the stage plans after its 3 timed epochs and keeps
    MIN_EPOCH_FRACTION of its 40 epochs (4); the cosine schedule ends at its floor on epoch 4."""
    objective = EpochsAwareObjective()
    trainer = build(tmp_path, objective, allowance_seconds=0.0, epochs=40)
    train, val = make_data()
    result = trainer.fit(train, val)
    assert (result.epochs_run, result.epochs_planned, result.epochs_configured) == (4, 4, 40)
    assert result.summary()["epochs_planned"] == 4 and result.summary()["epochs_configured"] == 40
    assert objective.epochs_told == [4]
    floor = 0.1 * 0.1  # learning_rate x min_lr_fraction
    assert math.isclose(result.history["lr"][-1], floor, rel_tol=1e-9)
    assert result.history["lr"][2] > 0.09  # epochs 1-3 ran on the 40-epoch schedule's near-peak rate
    log = (tmp_path / "log.txt").read_text()
    assert "4 of 40 epochs (the least kept, 10%: the budget will be overrun)" in log
    assert "toy epoch 4/4" in log
    saved = load_state(tmp_path / "toy_last.pt")
    assert (saved["epochs"], saved["finished"]) == (4, True)


@pytest.mark.parametrize("allowance", [math.inf, 1e9])
def test_a_budget_that_affords_every_epoch_changes_nothing(tmp_path, allowance):
    train, val = make_data()
    reference = build(tmp_path / "a", NoisyObjective())
    reference.fit(train, val)
    objective = EpochsAwareObjective()
    budgeted = build(tmp_path / "b", objective, allowance_seconds=allowance)
    result = budgeted.fit(train, val)
    assert result.history == reference.result.history
    assert (result.epochs_run, result.epochs_planned, objective.epochs_told) == (6, 6, [])
    assert "training time budget" not in (tmp_path / "b" / "log.txt").read_text()


def test_a_resumed_stage_keeps_the_epochs_its_budget_planned(tmp_path):
    """Interrupted after planning (inside epoch 4, the last of the 4 kept of 40), resumed without a budget: it
    still ends at the planned epoch, with the uninterrupted run's weights."""
    train, val = make_data()
    reference = build(tmp_path / "a", NoisyObjective(), allowance_seconds=0.0, epochs=40)
    reference.fit(train, val)
    expected = {k: v.clone() for k, v in reference.state()["model"].items()}

    interrupted = build(tmp_path / "b", NoisyObjective(interrupt_at_call=15), allowance_seconds=0.0, epochs=40)
    with pytest.raises(TrainingInterrupted, match="stopped at epoch 4, batch 4"):
        interrupted.fit(train, val)
    objective = EpochsAwareObjective()
    resumed = build(tmp_path / "b", objective, epochs=40)
    resumed.resume(tmp_path / "b" / "toy_last.pt")
    assert (resumed.epochs, objective.epochs_told) == (4, [4])  # the objective's warm-up follows the plan too
    result = resumed.fit(train, val)
    assert (result.epochs_run, result.epochs_planned) == (4, 4)
    for key, value in resumed.state()["model"].items():
        assert torch.equal(value, expected[key]), key
    assert result.history["val_loss"] == reference.result.history["val_loss"]


class ScriptedPaceObjective(NoisyObjective):
    """Advances a fake clock per training batch: 1 s per batch (4 s per epoch) for the first 3 epochs, as if
    another job shared the machine, then 0.25 s (1 s per epoch)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def __call__(self, model, batch, epoch):
        if model.training:
            self.clock.now += 1.0 if epoch < 3 else 0.25
        return super().__call__(model, batch, epoch)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_slow_start_is_corrected_when_the_stage_plans_again(tmp_path):
    """40 s for 40 epochs: after 3 slow epochs (12 s) the pace of 4 s affords 3 + 7; at epoch 8 (plans every 4
    epochs) the last 4 ran at 1 s, with 23 s left: 8 + 23 = 31, which then holds. Ran at the first plan's pace the
    stage would have kept 10."""
    clock = FakeClock()
    trainer = build(tmp_path, ScriptedPaceObjective(clock), allowance_seconds=40.0, epochs=40)
    trainer.clock = clock
    train, val = make_data()
    result = trainer.fit(train, val)
    assert (result.epochs_run, result.epochs_planned, result.seconds) == (31, 31, 40.0)
    log = (tmp_path / "log.txt").read_text()
    assert "leaves this stage 0:28 at 4.00 s per epoch: 10 of 40 epochs" in log
    assert "leaves this stage 0:23 at 1.00 s per epoch: 31 of 40 epochs" in log
    assert math.isclose(result.history["lr"][-1], 0.1 * 0.1, rel_tol=1e-9)  # the cosine ended at its floor


def test_an_allowance_that_depends_on_the_pace_is_asked_with_the_measured_one(tmp_path):
    """A member's allowance depends on its pace (how many members fit, time_budget.py): the trainer asks it
    with the pace of each plan and keeps that pace for the next member's decision. Here a slow pace is granted
    60 s, a fast one 30 s: at 4 s per epoch 3 + 48 / 4 = 15 epochs; at epoch 8 the last 4 ran at 1 s, with
    30 - 17 = 13 s left: 21, which then holds."""
    clock = FakeClock()
    asked = []

    def allowance(pace: float) -> float:
        asked.append(pace)
        return 60.0 if pace >= 2.0 else 30.0

    trainer = build(tmp_path, ScriptedPaceObjective(clock), allowance_seconds=allowance, epochs=40)
    trainer.clock = clock
    train, val = make_data()
    result = trainer.fit(train, val)
    assert asked == [4.0, 4.0, 1.0, 1.0, 1.0, 1.0]
    assert (result.epochs_run, result.seconds, result.seconds_per_epoch) == (21, 30.0, 1.0)
    log = (tmp_path / "log.txt").read_text()
    assert "leaves this stage 0:48 at 4.00 s per epoch: 15 of 40 epochs" in log
    assert "leaves this stage 0:13 at 1.00 s per epoch: 21 of 40 epochs" in log


def test_the_trainers_adamw_steps_as_torchs_default_adamw():
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(64, 32, generator=generator), torch.randn(32, generator=generator)]
    gradients = [[torch.randn(p.shape, generator=generator) for p in start] for _ in range(5)]
    finals = []
    for make in (lambda params: make_adamw(params, 1e-2, 0.1),
                 lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = make(params)
        for step in gradients:
            for param, gradient in zip(params, step):
                param.grad = gradient.clone()
            optimizer.step()
        finals.append([p.detach() for p in params])
    for tool, reference, first in zip(*finals, start):
        torch.testing.assert_close(tool, reference, rtol=1e-5, atol=1e-6)
        assert float((tool - first).abs().max()) > 0.01  # the steps moved the weights
    assert make_adamw([torch.nn.Parameter(torch.zeros(3))], 1e-3, 0.0).param_groups[0]["fused"]  # torch >= 2.4


def test_the_trainer_falls_back_to_the_per_tensor_adamw_where_fused_is_missing(monkeypatch):
    real = torch.optim.AdamW

    def without_fused(params, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", without_fused)
    optimizer = make_adamw([torch.nn.Parameter(torch.zeros(3))], 1e-3, 0.2)
    assert isinstance(optimizer, real) and not optimizer.param_groups[0]["fused"]
    assert optimizer.param_groups[0]["weight_decay"] == 0.2 and optimizer.param_groups[0]["lr"] == 1e-3
