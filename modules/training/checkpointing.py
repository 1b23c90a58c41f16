"""A training stage's checkpoints: what they hold, writing them (rank 0), resuming from them (every rank).

A checkpoint holds the loop's state (weights, optimiser, schedule, position, history) plus what this module
adds: the stage, the settings it must share with a run that resumes it, the config, every rank's random
state (so a restarted DDP group continues exactly) and extra state (e.g. the node scaler).

'last' is written every checkpoint_every epochs and on Ctrl-C; 'best' is held in memory whenever validation
improves and written with the next 'last' (and at the stage's end): written on every improvement, it cost a 0.2 s
fsync'd write of 53 MB in most epochs of a 1.4 s epoch on front-dev. A kill so loses at most the epochs since
the last checkpoint, 'best' included. With
keep_checkpoints N > 1 the end-of-epoch checkpoints of the N newest 'last' writes also stay, as
{stage}_epoch_NNNN.pt beside them (the newest is a hard link to {stage}_last.pt, so it costs no space);
older ones of the stage are removed.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from modules.config.compatibility import must_match, saved_with_defaults
from modules.config.schema import RunConfig
from modules.errors import CheckpointError, SimulGenError
from modules.runtime.distributed import Runtime
from modules.storage.run_directory import RunDirectory
from modules.storage.state_files import load_state, require_matching, save_state, write_atomically

CHECKPOINT_FORMAT = "simulgenvae-checkpoint-1"


@dataclass
class CheckpointPaths:
    last: Path
    best: Path


def capture_rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def detached_copy(value: Any) -> Any:
    """`value` (nested dicts, lists and tuples of tensors and plain values) with every tensor copied to the CPU
    and every container new, so that later changes to the original do not reach it."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: detached_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(detached_copy(item) for item in value)
    return copy.deepcopy(value)


class Checkpointer:
    """Writes and reads one stage's checkpoints. Every rank calls `save` (the random states are gathered
    from all of them); rank 0 alone writes."""

    def __init__(self, paths: CheckpointPaths, runtime: Runtime, stage: str, must_match: Dict[str, Any],
                 config_snapshot: Dict[str, Any], keep: int = 1, extra_state: Optional[Dict[str, Any]] = None):
        self.paths = paths
        self.runtime = runtime
        self.stage = stage
        self.must_match = must_match
        self.config_snapshot = config_snapshot
        self.keep = keep
        self.extra_state = extra_state or {}
        self._best_pending = False
        self._best_state: Optional[Dict[str, Any]] = None  # rank 0's copy; the other ranks only know one is pending

    @classmethod
    def for_stage(cls, run_dir: RunDirectory, stage: str, config: RunConfig, runtime: Runtime,
                  extra_state: Optional[Dict[str, Any]] = None, files: Optional[str] = None) -> "Checkpointer":
        """files: the checkpoint files' stage name when it is not `stage` (an ensemble's later members)."""
        paths = CheckpointPaths(run_dir.last_checkpoint(files or stage), run_dir.best_checkpoint(files or stage))
        return cls(paths, runtime, stage, must_match(config, stage), config.to_dict(),
                   config.train.keep_checkpoints, extra_state)

    # ----------------------------------------------------------------- writing
    def save_last(self, loop_state: Dict[str, Any]) -> None:
        """Write 'last', then the best state remembered since the previous write (after 'last': a restarted group
        must find a 'last' wherever a 'best' exists)."""
        self._save(self.paths.last, loop_state)
        if self.runtime.is_main and self.keep > 1 and loop_state["batches_done"] == 0:
            self._keep_newest(loop_state["epoch"])
        self.flush_best()

    def remember_best(self, loop_state: Dict[str, Any]) -> None:
        """Hold `loop_state` (copied to the CPU: the loop goes on changing its tensors) as 'best' until the next
        save_last or flush_best. Every rank calls it at the same epochs."""
        self._best_pending = True
        self._best_state = detached_copy(loop_state) if self.runtime.is_main else None

    def flush_best(self) -> None:
        """Write the remembered 'best', if any (every rank calls it: the random states are gathered)."""
        if self._best_pending:
            self._save(self.paths.best, self._best_state or {})
            self._best_pending, self._best_state = False, None
        self.runtime.barrier()

    def _save(self, path: Path, loop_state: Dict[str, Any]) -> None:
        rng_per_rank = self._gather_rng_states()
        if not self.runtime.is_main:
            return
        state = {"format": CHECKPOINT_FORMAT, "stage": self.stage, **loop_state, "rng": capture_rng_state(),
                 "must_match": self.must_match, "config": self.config_snapshot, "extra": self.extra_state}
        if rng_per_rank is not None:
            state["rng_per_rank"] = rng_per_rank
        save_state(path, state)

    def epoch_file(self, epoch: int) -> Path:
        return self.paths.last.with_name(f"{self.stage}_epoch_{epoch:04d}.pt")

    def _keep_newest(self, epoch: int) -> None:
        """The 'last' just written stays as this epoch's file; epoch files outside the newest `keep` go (also
        those of a later epoch: left by an earlier, longer run in the same folder, they are not this run's)."""
        kept = self.epoch_file(epoch)
        if kept.exists():
            kept.unlink()
        try:
            os.link(self.paths.last, kept)
        except OSError:  # a file system without hard links: a copy
            write_atomically(kept, self._copy_of_last)
        own = re.compile(rf"{re.escape(self.stage)}_epoch_(\d+)\.pt")
        for path in kept.parent.iterdir():
            match = own.fullmatch(path.name)
            if match and not epoch - self.keep < int(match.group(1)) <= epoch:
                path.unlink()

    def _copy_of_last(self, stream: Any) -> None:
        with open(self.paths.last, "rb") as source:
            shutil.copyfileobj(source, stream)

    def _gather_rng_states(self) -> Optional[List[Dict[str, torch.Tensor]]]:
        """[{"torch": cpu state, "cuda": this rank's device state}] per rank, or None in one process."""
        runtime = self.runtime
        if not runtime.distributed:
            return None
        gathered = {"torch": runtime.all_gather(torch.get_rng_state())}
        if runtime.device.type == "cuda":
            gathered["cuda"] = runtime.all_gather(torch.cuda.get_rng_state(runtime.device))
        return [{key: parts[rank] for key, parts in gathered.items()} for rank in range(runtime.world_size)]

    # ----------------------------------------------------------------- reading
    def load_for_resume(self, path: Path) -> Dict[str, Any]:
        """The state in `path`, after checking every process can read it and it is this stage's, trained
        with the settings this run must share."""
        if self.runtime.any_rank(not Path(path).is_file()):
            raise CheckpointError(
                f"{path}: not found on every process (each of the {self.runtime.world_size} processes reads it "
                f"to resume); with several nodes put --out on a filesystem that every node mounts")
        state = load_state(path)
        if state.get("stage") != self.stage:
            raise SimulGenError(f"{path} is a '{state.get('stage')}' checkpoint, not '{self.stage}'")
        require_matching(path, saved_with_defaults(state["must_match"], self.stage), self.must_match,
                         f"{self.stage} checkpoint")
        return state

    def restore_rng(self, state: Dict[str, Any], reseed: int) -> None:
        """This rank's random state as saved; saved by another number of processes, the shared state
        re-seeded per rank with `reseed` (the batches differ anyway, and the ranks' streams must differ)."""
        runtime = self.runtime
        per_rank = state.get("rng_per_rank")
        if runtime.distributed and per_rank is not None and len(per_rank) == runtime.world_size:
            mine = per_rank[runtime.rank]
            torch.set_rng_state(mine["torch"])
            if "cuda" in mine and runtime.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], runtime.device)
            return
        restore_rng_state(state["rng"])
        if runtime.distributed:
            runtime.seed_this_rank(reseed)

    def load_best_into(self, module: torch.nn.Module) -> None:
        """The 'best' weights into `module` on every rank (rank 0 reads them and sends them to the others,
        so nodes without rank 0's disk get the same weights); nothing when no 'best' was written."""
        runtime = self.runtime
        if not runtime.any_rank(runtime.is_main and self.paths.best.is_file()):
            return
        if runtime.is_main:
            module.load_state_dict(load_state(self.paths.best, map_location=runtime.device)["model"])
        runtime.broadcast_module_(module)
