"""The one training loop, shared by the VAE, the conditioner and end-to-end training.

An objective turns a batch into a loss; this loop owns the rest of a step and an epoch:
shuffling (seeded per epoch, so a resumed run sees the same order), AdamW,
the learning-rate schedule, mixed precision, gradient clipping, validation,
metrics reduced over ranks, early stopping, the NaN guard, and when to write
the 'last' and 'best' checkpoints and a clean stop on Ctrl-C or SIGTERM that can
be resumed exactly. What a checkpoint holds and how it is written and read is
checkpointing.py's.

Under DDP (see runtime/distributed.py) every rank runs this same loop on its shard: the
global batch stays settings.batch_size, the logged metrics are means over all
ranks' samples, only rank 0 writes, and each rank's random stream is saved so
a restarted group continues exactly.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from modules.config.schema import RunConfig
from modules.errors import SimulGenError, TrainingDivergedError, TrainingInterrupted
from modules.storage.state_files import load_weights
from modules.training.checkpointing import Checkpointer, capture_rng_state, restore_rng_state
from modules.training.memory_watch import LoadingSetup, MemoryWatch
from modules.training.profiling import StepTimer, summarize
from modules.training.stop_request import StopRequest
from modules.training.run_log import RunLog
from modules.training.time_budget import (MIN_EPOCH_FRACTION, PACE_EPOCHS, Allowance, affordable_epochs,
                                          plan_tolerance, replanning_interval)
from modules.runtime import memory
from modules.runtime.devices import evaluation_mode
from modules.runtime.distributed import Runtime, unwrap

# Where each stage's own settings are (TrainConfig for the VAE, ConditionerConfig for the conditioner) ...
STAGE_SECTIONS = {"vae": "train", "conditioner": "conditioner"}
PER_STAGE_FIELDS = ("epochs", "batch_size", "learning_rate", "weight_decay", "early_stopping_patience")
# ... and the settings both stages take from TrainConfig.
SHARED_FIELDS = ("grad_clip", "lr_schedule", "min_lr_fraction", "checkpoint_every", "seed", "grad_accumulation_steps",
                 "memory_warning_fraction")

# objective(model, batch_on_device, epoch) -> (loss to minimise, metrics as floats)
Objective = Callable[[torch.nn.Module, Any, int], Tuple[torch.Tensor, Dict[str, float]]]


@dataclass(frozen=True)
class LoopSettings:
    """Optimisation settings of one training stage."""

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    grad_clip: float
    lr_schedule: str
    min_lr_fraction: float
    early_stopping_patience: int
    checkpoint_every: int
    seed: int
    grad_accumulation_steps: int = 1
    """Batches whose gradients are summed (each weighted by its share of the group's cases) before one
    optimizer step: the step is that of one batch of all their cases."""
    memory_warning_fraction: float = 0.1
    """Warn when the memory the OS can still give falls under this share of the total (0 = never)."""
    sweep_in_memory: bool = True
    """--load_all=1: the run holds the whole sweep in memory, whatever this stage trains on (coefficients,
    latents), so the memory warning may suggest --load_all=0."""
    divergence_hint: str = "lower the learning rate"
    still_to_come: str = ""
    """What the run does after this stage, shown beside the stage's ETA (e.g. '+ conditioner, 300 epochs'), so
    the progress line never suggests the whole run ends with this stage."""
    evaluate_start: bool = False
    """Validate the weights before the first epoch too, and keep them if no epoch beats them
    (for a model that starts from a meaningful solution, e.g. a conditioner that starts at the VAE's
    design-prior prediction)."""

    @classmethod
    def for_stage(cls, config: RunConfig, stage: str, divergence_hint: str,
                  evaluate_start: bool = False) -> "LoopSettings":
        """The 'vae' or 'conditioner' stage's settings: its own section's, plus those both stages share."""
        section = getattr(config, STAGE_SECTIONS[stage])
        values = {name: getattr(section, name) for name in PER_STAGE_FIELDS}
        values.update({name: getattr(config.train, name) for name in SHARED_FIELDS})
        members = config.conditioner.ensemble_members
        epochs = f"{members} x {config.conditioner.epochs}" if members > 1 else f"{config.conditioner.epochs}"
        minutes = config.train.training_minutes
        within = f" (training within {minutes:g} min: training_minutes)" if minutes > 0 else ""
        still_to_come = f"+ conditioner, {epochs} epochs, and the report{within}" if stage == "vae" else "+ the report"
        return cls(name=stage, divergence_hint=divergence_hint, evaluate_start=evaluate_start,
                   sweep_in_memory=config.data.load_all, still_to_come=still_to_come, **values)


@dataclass
class TrainingResult:
    history: Dict[str, List[float]] = field(default_factory=dict)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    epochs_run: int = 0
    epochs_planned: int = 0
    """The epochs the stage was to run: epochs_configured, or fewer where the time budget cut them."""
    epochs_configured: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    """The pace the time budget's last plan measured (every rank the same); 0 without a budget."""
    samples_per_second: float = 0.0
    phase_seconds: Dict[str, float] = field(default_factory=dict)
    """Wall seconds of this process per phase (see modules.training.profiling.PHASES) in this fit() call."""

    def summary(self) -> Dict[str, Any]:
        """What the report keeps of this training: epochs, the kept one, time and its split by phase."""
        return {"epochs_run": self.epochs_run, "epochs_planned": self.epochs_planned,
                "epochs_configured": self.epochs_configured,
                "best_epoch": self.best_epoch + 1, "best_val_loss": self.best_val_loss,
                "seconds": self.seconds, "cases_per_second": self.samples_per_second,
                "stopped_early": self.stopped_early,
                # Unrounded: a tiny run's forward pass takes well under 5 ms.
                "seconds_per_phase": dict(self.phase_seconds)}


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    return batch


def make_adamw(parameters: List[torch.nn.Parameter], learning_rate: float,
               weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all parameters) where this torch and device have it: on CPU the default
    per-tensor loop took 18 % of a VAE epoch on the wave sweep; fused, the stage trains 1.14x the cases per
    second (benchmarks/train_throughput.py). Fused rounds differently: runs are not bit-identical to unfused ones."""
    try:
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # e.g. CPU before torch 2.4, or a device without the fused kernel
        return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)


class Trainer:
    """Runs one stage: `fit()` trains `model` with `objective` on the datasets."""

    def __init__(self, model: torch.nn.Module, objective: Objective, settings: LoopSettings, runtime: Runtime,
                 log: RunLog, checkpoints: Checkpointer, allowance_seconds: Allowance = math.inf):
        """allowance_seconds: this stage's part of the training time budget (time_budget.py), or a function of
        its measured seconds per epoch giving it; after timing its first PACE_EPOCHS epochs a stage keeps the
        epochs that fit in it. math.inf: settings.epochs."""
        self.model = runtime.wrap(model)
        self.objective = objective
        self.settings = settings
        self.runtime = runtime
        self.log = log
        self.checkpoints = checkpoints
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_adamw(trainable, settings.learning_rate, settings.weight_decay)
        self.scheduler = self._make_scheduler()
        self.grad_scaler = runtime.make_grad_scaler()
        self.result = TrainingResult()
        self.timer = StepTimer(runtime.device)
        self.memory = MemoryWatch(runtime.device, settings.memory_warning_fraction, settings.name,
                                  STAGE_SECTIONS.get(settings.name, "train"))
        self.epoch = 0
        self.batches_done = 0
        self.epochs_since_best = 0
        self.allowance_seconds = allowance_seconds
        self.epochs = settings.epochs
        """The epochs this stage runs: settings.epochs, or fewer when the time budget says so (_plan_epochs)."""
        self._epoch_seconds: List[float] = []  # this process's epochs, to plan from
        self.clock: Callable[[], float] = time.perf_counter
        """What times the epochs for the budget and the ETA (tests replace it)."""
        if runtime.world_size > 1 and settings.batch_size % runtime.world_size:
            raise SimulGenError(
                f"{settings.name}: the batch size {settings.batch_size} does not divide evenly over "
                f"{runtime.world_size} processes; choose a batch size that is a multiple of {runtime.world_size}")
        self.rank_batch_size = max(1, settings.batch_size // runtime.world_size)
        runtime.seed_this_rank(settings.seed)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        if self.settings.lr_schedule == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: 1.0)
        floor = self.settings.learning_rate * self.settings.min_lr_fraction
        return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.settings.epochs, eta_min=floor)

    # ----------------------------------------------------------------- state
    def state(self) -> Dict[str, Any]:
        """The loop's part of a checkpoint (the Checkpointer adds stage, settings, config and random state)."""
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict(),
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "history": self.result.history,
            "best_epoch": self.result.best_epoch,
            "finished": self.result.stopped_early or self.epoch >= self.epochs,
            "epochs": self.epochs,
            "best_val_loss": self.result.best_val_loss,
            "epochs_since_best": self.epochs_since_best,
            "seconds": self.result.seconds,
        }

    def resume(self, path: Path) -> None:
        """Continue exactly where `path` stopped (same weights, optimiser, schedule, RNG and batch position)."""
        state = self.checkpoints.load_for_resume(path)
        load_weights(unwrap(self.model), state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.epoch, self.batches_done = state["epoch"], state["batches_done"]
        self.checkpoints.restore_rng(state, reseed=self.settings.seed + self.epoch)
        self.result.history = {key: list(values) for key, values in state["history"].items()}
        self.result.best_epoch, self.result.best_val_loss = state["best_epoch"], state["best_val_loss"]
        self.result.seconds = state.get("seconds", 0.0)
        self.epochs_since_best = state["epochs_since_best"]
        # Checkpoints written before the time budget ran every configured epoch.
        self._run_epochs(int(state.get("epochs", self.settings.epochs)))  # the schedule's length came with its state
        self.log.info(f"{self.settings.name}: resumed from {path} at epoch {self.epoch + 1}"
                      + (f", batch {self.batches_done + 1}" if self.batches_done else ""))

    # ------------------------------------------------------------------ data
    def _epoch_batches(self, dataset: Dataset, epoch: int) -> List[List[int]]:
        """This rank's batches for `epoch`: a seeded shuffle, identical on every run and after resume.

        Batch j of every rank together holds the cases of batch j of a one-process run (see
        Runtime.sampler), so the averaged DDP gradient is the one-process gradient of that batch.
        """
        sampler = self.runtime.sampler(dataset, shuffle=True, seed=self.settings.seed)
        sampler.set_epoch(epoch)  # a new order every epoch, the same on every rank
        return list(memory.chunks(list(sampler), self.rank_batch_size))

    def _loader(self, dataset: Dataset, batches: List[List[int]], num_workers: int) -> DataLoader:
        # A private generator: creating a loader iterator otherwise draws from the global RNG, and a
        # resumed run (which creates it mid-epoch) would see a different random stream.
        on_device = getattr(dataset, "device", torch.device("cpu")).type != "cpu"
        # A window kept on the GPU is indexed in this process: workers cannot use CUDA tensors, nor can they be pinned.
        return DataLoader(dataset, batch_sampler=batches, num_workers=0 if on_device else num_workers,
                          pin_memory=self.runtime.device.type == "cuda" and not on_device,
                          generator=torch.Generator().manual_seed(self.settings.seed))

    # ------------------------------------------------------------------ loop
    def fit(self, train_set: Dataset, val_set: Dataset, num_workers: int = 0) -> TrainingResult:
        settings = self.settings
        samples_seen, started = 0, time.perf_counter()
        with StopRequest() as stop:
            if settings.evaluate_start and self.epoch == 0 and self.batches_done == 0 \
                    and self.result.best_val_loss == math.inf:
                start_metrics = self._validate(val_set, num_workers)
                self.result.best_val_loss, self.result.best_epoch = _selection(start_metrics), -1
                self.log.info(f"{settings.name}: before training, validation "
                              + "  ".join(f"{key} {value:.4g}" for key, value in start_metrics.items()))
                self.checkpoints.remember_best(self.state())
            while self.epoch < self.epochs:
                epoch_started = self.clock()
                train_metrics, seen = self._train_epoch(train_set, num_workers, stop)
                samples_seen += self.runtime.all_reduce_sum(seen)  # cases/s of the whole group
                validation_started = time.perf_counter()
                val_metrics = self._validate(val_set, num_workers)
                self.scheduler.step()
                self._record(train_metrics, val_metrics)
                epoch_seconds = self.clock() - epoch_started
                self.result.seconds += epoch_seconds
                self._epoch_seconds.append(epoch_seconds)
                improved = _selection(val_metrics) < self.result.best_val_loss
                if improved:
                    self.result.best_val_loss, self.result.best_epoch = _selection(val_metrics), self.epoch
                    self.epochs_since_best = 0
                else:
                    self.epochs_since_best += 1
                self.epoch += 1
                self.batches_done = 0
                if self._planning_due():
                    self._plan_epochs()
                self._report_epoch(train_metrics, val_metrics)
                patience = settings.early_stopping_patience
                stop_now = patience > 0 and self.epochs_since_best >= patience
                if improved:  # written with the next 'last' (checkpointing.py)
                    self.checkpoints.remember_best(self.state())
                # Epoch 1 too: a group torchrun restarts must find a 'last' to resume from whenever a 'best'
                # exists, or the run folder's guard refuses it as an earlier run's.
                if (self.epoch % settings.checkpoint_every == 0 or self.epoch in (1, self.epochs)
                        or stop_now):
                    self.checkpoints.save_last(self.state())
                self.timer.seconds["validation+checkpoints"] += time.perf_counter() - validation_started
                if stop_now:
                    self.log.info(f"{settings.name}: validation loss has not improved for {patience} epochs; "
                                  f"stopping early at epoch {self.epoch}")
                    self.result.stopped_early = True
                    break
        elapsed = time.perf_counter() - started
        self.result.epochs_run = self.epoch
        self.result.epochs_planned, self.result.epochs_configured = self.epochs, settings.epochs
        self.result.samples_per_second = samples_seen / elapsed if elapsed > 0 else 0.0
        self.result.phase_seconds = dict(self.timer.seconds)
        for line in summarize(settings.name, self.timer, self.result.samples_per_second,
                              loading_in_memory=num_workers == 0 and not _streams(train_set)):
            self.log.info(line)
        for dataset in (train_set, val_set):  # e.g. a streamed dataset's case cache and its hit rate
            note = getattr(dataset, "loading_note", lambda: None)()
            if note:
                self.log.info(f"{settings.name}: {note}")
        if self.runtime.distributed:
            digest = self.runtime.require_identical_replicas(unwrap(self.model), settings.name)
            self.log.info(f"{settings.name}: all {self.runtime.world_size} processes hold identical weights "
                          f"after epoch {self.epoch} (sha256 {digest[:16]})")
        # End on the epoch with the lowest validation loss.
        self.checkpoints.flush_best()
        self.checkpoints.load_best_into(unwrap(self.model))
        return self.result

    def _planning_due(self) -> bool:
        """After the first PACE_EPOCHS timed epochs, then every tenth of the configured epochs: a pace measured
        once would let a start slowed by another job (or a faster stretch later) decide the whole stage."""
        timed = len(self._epoch_seconds)
        budgeted = callable(self.allowance_seconds) or math.isfinite(self.allowance_seconds)
        return (budgeted and timed >= PACE_EPOCHS
                and (timed == PACE_EPOCHS or self.epoch % replanning_interval(self.settings.epochs) == 0))

    def _plan_epochs(self) -> None:
        """Keep the epochs the rest of the stage's allowance affords at its recent pace (the median of the last
        interval's epochs; every rank the same: the ranks' means), and anneal the schedules over them."""
        window = max(PACE_EPOCHS, replanning_interval(self.settings.epochs))
        pace = statistics.median(self._epoch_seconds[-window:])
        allowance = self.allowance_seconds
        if callable(allowance):  # the allowance depends on the pace: every rank computes it from the same one
            pace = self.runtime.all_reduce_mean({"pace": pace})["pace"]
            allowance = allowance(pace)
        agreed = self.runtime.all_reduce_mean({"pace": pace, "left": allowance - self.result.seconds})
        self.result.seconds_per_epoch = agreed["pace"]
        planned = affordable_epochs(self.settings.epochs, self.epoch, agreed["pace"], agreed["left"])
        first = len(self._epoch_seconds) == PACE_EPOCHS
        if planned == self.epochs or (not first and abs(planned - self.epochs) < plan_tolerance(self.settings.epochs)
                                      and planned > self.epoch):
            return  # a pace that wavers by a few percent does not move the schedule's end back and forth
        self._run_epochs(planned)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            # PyTorch's cosine is recursive: from here it goes on from the present rate as a cosine that ends at
            # its floor on the new last epoch.
            self.scheduler.T_max = planned
        overrun = (planned - self.epoch) * agreed["pace"] > agreed["left"]
        self.log.info(f"{self.settings.name}: the training time budget (training_minutes) leaves this stage "
                      f"{_format_seconds(max(0.0, agreed['left']))} at {agreed['pace']:.2f} s per epoch: {planned} "
                      f"of {self.settings.epochs} epochs"
                      + (f" (the least kept, {MIN_EPOCH_FRACTION:.0%}: the budget will be overrun)" if overrun else "")
                      + ("; raise training_minutes, or set it to 0, to run them all"
                         if planned < self.settings.epochs else ""))

    def _run_epochs(self, epochs: int) -> None:
        """Run `epochs` epochs, and tell an objective whose schedule depends on them (the KL warm-up spans half)."""
        self.epochs = epochs
        if epochs != self.settings.epochs and hasattr(self.objective, "set_epochs"):
            self.objective.set_epochs(epochs)

    def _train_epoch(self, dataset: Dataset, num_workers: int, stop: StopRequest) -> Tuple[Dict[str, float], int]:
        """One epoch of optimizer steps, each over a group of grad_accumulation_steps consecutive batches
        (counted from the epoch's start; the last group takes what is left). A stop request is honoured only
        between groups, so a checkpoint never holds half a gradient and resuming from it is exact."""
        settings, runtime = self.settings, self.runtime
        self.model.train()
        batches = self._epoch_batches(dataset, self.epoch)
        remaining = batches[self.batches_done:]
        totals: Dict[str, float] = {}
        seen = 0
        bar = tqdm(self._loader(dataset, remaining, num_workers), total=len(batches), initial=self.batches_done,
                   desc=f"{settings.name} epoch {self.epoch + 1}/{self.epochs}", leave=False,
                   # None: tqdm switches itself off when stderr is not a terminal (a piped or logged run).
                   disable=None if runtime.is_main and self.log.show_progress else True, dynamic_ncols=True)
        batches_iter = iter(bar)
        while self.batches_done < len(batches):
            if runtime.any_rank(stop.requested):
                self.checkpoints.save_last(self.state())
                raise TrainingInterrupted(
                    f"{settings.name}: stopped at epoch {self.epoch + 1}, batch {self.batches_done + 1}; a checkpoint "
                    f"was written to {self.checkpoints.paths.last}. Continue with the same command plus --resume")
            group = batches[self.batches_done:self._group_end(len(batches))]
            group_cases = sum(len(indices) for indices in group)
            self.optimizer.zero_grad(set_to_none=True)
            for position in range(len(group)):
                with self.timer.phase("data"):
                    batch = next(batches_iter)
                batch = move_to_device(batch, runtime.device)
                batch_size = _batch_length(batch)
                metrics = self._accumulate(batch, share=batch_size / group_cases, last=position == len(group) - 1)
                seen += batch_size
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value * batch_size
                self.batches_done += 1
                reading = self.memory.poll(self.epoch, self._loading(dataset, num_workers), self.log.info)
                bar.set_postfix(self._postfix(metrics, reading.short()), refresh=False)
            self._optimizer_step()
        bar.close()
        self.memory.read(self.epoch, self._loading(dataset, num_workers), self.log.info)
        local = {key: value / max(seen, 1) for key, value in totals.items()}
        return runtime.all_reduce_mean(local, weight=float(seen)), seen

    def _loading(self, dataset: Dataset, num_workers: int) -> LoadingSetup:
        streamed = _streams(dataset) or not self.settings.sweep_in_memory
        return LoadingSetup(self.memory.batch_key, self.settings.batch_size, streamed, num_workers,
                            cached=getattr(dataset, "cache", None) is not None)

    def _group_end(self, num_batches: int) -> int:
        """One past the last batch of the accumulation group that starts at batches_done."""
        steps = self.settings.grad_accumulation_steps
        return min(num_batches, (self.batches_done // steps + 1) * steps)

    def _accumulate(self, batch: Any, share: float, last: bool) -> Dict[str, float]:
        """Forward and backward of one batch, its loss weighted by its share of the group's cases: the objective's
        loss is a mean over its batch, so the summed gradient is that of the mean over the whole group. Under DDP
        the gradient is all-reduced only with the group's last backward."""
        settings, runtime = self.settings, self.runtime
        with self.timer.phase("forward"), runtime.autocast():
            loss, metrics = self.objective(self.model, batch, self.epoch)
        if runtime.any_rank(not bool(torch.isfinite(loss.detach()).item())):
            self.checkpoints.flush_best()  # the best epoch before the divergence is a good one to keep
            raise TrainingDivergedError(
                f"{settings.name}: the loss became {loss.item()} at epoch {self.epoch + 1}, batch "
                f"{self.batches_done + 1}; training stopped. The last good checkpoints stay in "
                f"{self.checkpoints.paths.last.parent}. To fix: {settings.divergence_hint}; then run again "
                f"(add --resume to continue from the last checkpoint).")
        with self.timer.phase("backward"), runtime.gradient_sync(self.model, sync=last):
            self.grad_scaler.scale(loss * share if share != 1.0 else loss).backward()
        return metrics

    def _optimizer_step(self) -> None:
        with self.timer.phase("optimizer"):
            if self.settings.grad_clip > 0:
                self.grad_scaler.unscale_(self.optimizer)
                parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(parameters, self.settings.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

    def _validate(self, dataset: Dataset, num_workers: int) -> Dict[str, float]:
        """Mean metrics over the whole validation set: each rank takes a disjoint, unpadded shard, so
        no case counts twice; a rank left without cases evaluates one with weight 0 to learn the keys."""
        runtime = self.runtime
        indices = runtime.shard(len(dataset))
        weight_of_cases = 1.0 if indices else 0.0
        indices = indices or [0]
        batches = list(memory.chunks(indices, self.rank_batch_size))
        totals: Dict[str, float] = {}
        seen = 0
        rng = capture_rng_state()  # validation sampling must not shift the training random stream
        # The plain module: no gradient to average, and DDP's forward would sync buffers in lockstep,
        # which ranks with different shard sizes cannot keep.
        # In fp32 even when training runs under bf16 autocast: the epochs it compares differ by less than bf16's
        # rounding (the demo's whole training error is ~0.4 %, about bf16's relative precision), so bf16
        # validation could not tell them apart (issue 12).
        with evaluation_mode(unwrap(self.model)) as model:
            for batch in self._loader(dataset, batches, num_workers):
                batch = move_to_device(batch, runtime.device)
                _, metrics = self.objective(model, batch, self.epoch)
                size = _batch_length(batch)
                seen += size
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value * size
        restore_rng_state(rng)
        local = {key: value / max(seen, 1) for key, value in totals.items()}
        return runtime.all_reduce_mean(local, weight=float(seen) * weight_of_cases)

    # --------------------------------------------------------------- logging
    def _record(self, train_metrics: Dict[str, float], val_metrics: Dict[str, float]) -> None:
        history = self.result.history
        for key, value in train_metrics.items():
            history.setdefault(f"train_{key}", []).append(value)
        for key, value in val_metrics.items():
            history.setdefault(f"val_{key}", []).append(value)
        history.setdefault("lr", []).append(self.optimizer.param_groups[0]["lr"])

    def _postfix(self, metrics: Dict[str, float], memory_text: str) -> Dict[str, str]:
        shown = {key: f"{value:.3g}" for key, value in metrics.items()}
        shown["lr"] = f"{self.optimizer.param_groups[0]['lr']:.2g}"
        shown["mem"] = memory_text
        done = self.result.history.get("lr", [])
        if done:
            per_epoch = self.result.seconds / len(done)
            shown["eta"] = _format_seconds(per_epoch * (self.epochs - len(done)))
            if self.settings.still_to_come:
                shown["then"] = self.settings.still_to_come
        return shown

    def _report_epoch(self, train_metrics: Dict[str, float], val_metrics: Dict[str, float]) -> None:
        name = self.settings.name
        lr = self.result.history["lr"][-1]
        per_epoch = self.result.seconds / max(len(self.result.history["lr"]), 1)
        eta = per_epoch * (self.epochs - self.epoch)
        parts = [f"{name} epoch {self.epoch}/{self.epochs}"]
        parts += [f"{key} {value:.4g}" for key, value in train_metrics.items()]
        parts += [f"val_{key} {value:.4g}" for key, value in val_metrics.items() if key in ("loss", "recon")]
        parts += [f"lr {lr:.2e}", f"eta {_format_seconds(eta)}"
                  + (f" {self.settings.still_to_come}" if self.settings.still_to_come and eta > 0 else "")]
        reading = self.memory.latest
        if reading is not None:  # this process's memory (each rank reads its own; rank 0 logs)
            parts.append(f"mem {reading.short()}")
        self.log.info("  ".join(parts))
        scalars = {f"train/{k}": v for k, v in train_metrics.items()}
        scalars.update({f"val/{k}": v for k, v in val_metrics.items()})
        scalars["lr"] = lr
        if reading is not None:
            scalars.update(reading.scalars())
        self.log.scalars(name, scalars, self.epoch)


def _streams(dataset: Dataset) -> bool:
    """True when the dataset reads cases from disk on access (FieldDataset with load_all=0)."""
    return getattr(dataset, "load_all", True) is False


def _selection(val_metrics: Dict[str, float]) -> float:
    """What 'best' means: the objective's 'selection' metric if it gives one, else its loss."""
    return val_metrics.get("selection", val_metrics["loss"])


def _batch_length(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return int(first.shape[0])


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
