"""Where the code runs: device, DistributedDataParallel under torchrun, mixed precision.

The training loop only calls what is here: `wrap`, `sampler`, `autocast`,
`make_grad_scaler`, `is_main`, `all_reduce_mean` and `barrier`. Process groups
use NCCL when every rank has a GPU and gloo on CPUs, initialised from
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from modules.errors import SimulGenError


@dataclass
class Runtime:
    """The device and process-group facts of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    amp_dtype: Optional[torch.dtype] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 needs loss scaling; bf16 and fp32 have fp32's exponent range.
        enabled = self.amp_dtype == torch.float16
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int) -> Optional[DistributedSampler]:
        if not self.distributed:
            return None
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                  shuffle=shuffle, seed=seed, drop_last=False)

    def all_reduce_mean(self, values: Dict[str, float], weight: float = 1.0) -> Dict[str, float]:
        """Weighted mean of each value over ranks (weight = samples this rank saw)."""
        if not self.distributed:
            return dict(values)
        keys = sorted(values)
        packed = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64,
                              device=self._collective_device())
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        total = packed[-1].item()
        return {k: packed[i].item() / total for i, k in enumerate(keys)}

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if the flag is set on any rank."""
        if not self.distributed:
            return flag
        packed = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
        return bool(packed.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def choose_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SimulGenError(f"--device={requested} was requested but PyTorch sees no CUDA GPU "
                                f"(torch {torch.__version__}); use --device=cpu or install a CUDA build of torch")
        if requested == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(requested)
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def amp_dtype_for(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    if not enabled or device.type != "cuda":
        return None  # plain fp32 on CPU
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def setup_runtime(device: str, amp: bool, use_ddp: bool) -> Runtime:
    """Initialise the process group when launched by torchrun (or --use_ddp), else a single process."""
    if use_ddp and not _launched_by_torchrun():
        raise SimulGenError("--use_ddp needs torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); "
                            "start the run with launch_ddp.py or torchrun --nproc_per_node=N SimulGen-VAE.py ...")
    if not _launched_by_torchrun():
        chosen = choose_device(device)
        return Runtime(device=chosen, amp_dtype=amp_dtype_for(chosen, amp))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    chosen = choose_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Runtime(device=chosen, rank=rank, world_size=world_size, local_rank=local_rank,
                   distributed=world_size > 1 or use_ddp, amp_dtype=amp_dtype_for(chosen, amp))


def shutdown_runtime(runtime: Runtime) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (state dicts are saved from it)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
