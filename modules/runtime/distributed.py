"""Where the code runs: device, DistributedDataParallel under torchrun, mixed precision.

The training loop only calls what is here: `wrap`, `gradient_sync`, `sampler`, `shard`,
`autocast`, `make_grad_scaler`, `is_main`, the collectives (`all_reduce_mean`,
`all_reduce_sum`, `any_rank`, `broadcast_`, `all_gather`, `barrier`) and
`require_identical_replicas`. Process groups use NCCL when every rank has a GPU
and gloo on CPUs, initialised from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every collective here must be called by
every rank in the same order; a single process skips them all.
"""
from __future__ import annotations

import contextlib
import gc
from datetime import timedelta
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from modules.errors import SimulGenError
from modules.runtime.devices import amp_dtype_for, choose_device

# Rank r draws its noise (reparameterisation, dropout) from seed + r * RANK_SEED_STRIDE: the ranks see
# different cases, and identical noise on every rank would correlate their samples.
RANK_SEED_STRIDE = 1_000_003


# How long a finishing rank waits for the others before it leaves the process group anyway.
SHUTDOWN_BARRIER_SECONDS = 60


@dataclass
class Runtime:
    """The device and process-group facts of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    """Processes of this group on this machine (each keeps its own --load_all=1 copy of the sweep)."""
    distributed: bool = False
    amp_dtype: Optional[torch.dtype] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        """The process group's backend (nccl on GPUs, gloo on CPUs), 'none' without a group."""
        return dist.get_backend() if self.distributed and dist.is_initialized() else "none"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 needs loss scaling; bf16 and fp32 have fp32's exponent range.
        enabled = self.amp_dtype == torch.float16
        return torch.amp.GradScaler(self.device.type if enabled else "cpu", enabled=enabled)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device; under DDP wrap it (which copies rank 0's weights to every rank).

        DDP expects every parameter that requires a gradient to receive one in each step, so models
        must freeze what their forward pass does not use (see objectives.ConditionedDecoder).
        """
        model = model.to(self.device)
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def gradient_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Around a backward pass: with sync False under DDP, keep the gradient on this rank (DDP's no_sync)
        so a gradient accumulated over micro-batches is all-reduced once, with its last backward."""
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int) -> DistributedSampler:
        """This rank's share of a seeded order; call set_epoch(epoch) before each epoch.

        One process uses the same sampler with one replica, so N processes train on exactly the cases
        one process would put in each global batch (rank r takes positions r, r + N, ... of the order).
        The order is padded by repeating its first cases so every rank runs the same number of steps.
        """
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                  shuffle=shuffle, seed=seed, drop_last=False)

    def shard(self, length: int) -> List[int]:
        """This rank's positions of range(length) for evaluation: disjoint, no padding, possibly empty."""
        return list(range(self.rank, length, self.world_size))

    def seed_this_rank(self, seed: int) -> None:
        """Give each rank its own random stream (the weights are already equal: DDP broadcasts them)."""
        if self.distributed:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank)

    def all_reduce_mean(self, values: Dict[str, float], weight: float = 1.0) -> Dict[str, float]:
        """Weighted mean of each value over ranks (weight = samples this rank saw); keys keep their order.

        Every rank must pass the same keys. A rank with weight 0 contributes nothing.
        """
        if not self.distributed:
            return dict(values)
        keys = sorted(values)
        packed = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64,
                              device=self._collective_device())
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        total = packed[-1].item()
        reduced = {k: packed[i].item() / total for i, k in enumerate(keys)}
        return {k: reduced[k] for k in values}

    def all_reduce_sum(self, value: float) -> float:
        """Sum of a number over ranks (e.g. samples processed)."""
        if not self.distributed:
            return value
        packed = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        return packed.item()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if the flag is set on any rank."""
        if not self.distributed:
            return flag
        packed = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(packed, op=dist.ReduceOp.MAX)
        return bool(packed.item() > 0)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Overwrite `tensor` in place with rank `src`'s values (same shape and dtype on every rank)."""
        if not self.distributed:
            return tensor
        carrier = tensor.detach().to(self._collective_device()).contiguous()
        dist.broadcast(carrier, src=src)
        with torch.no_grad():
            tensor.copy_(carrier)
        return tensor

    def broadcast_module_(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank `src`'s parameters and buffers into `module` on every rank."""
        for tensor in module.state_dict().values():
            self.broadcast_(tensor, src)

    def all_gather(self, tensor: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's `tensor` (same shape and dtype everywhere), in rank order, on the CPU."""
        if not self.distributed:
            return [tensor.detach().cpu().clone()]
        carrier = tensor.detach().to(self._collective_device()).contiguous()
        gathered = [torch.empty_like(carrier) for _ in range(self.world_size)]
        dist.all_gather(gathered, carrier)
        return [part.cpu() for part in gathered]

    def require_identical_replicas(self, module: torch.nn.Module, what: str) -> str:
        """The digest of `module`'s state, after checking that every rank holds exactly the same one.

        DDP keeps replicas equal only if every rank applies the same averaged gradient; a difference
        means the ranks have silently trained different models, and rank 0's checkpoint would hide it.
        """
        digest = state_digest(module.state_dict())
        if not self.distributed:
            return digest
        mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8)
        digests = [bytes(part.tolist()).hex() for part in self.all_gather(mine)]
        differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
        if differing:
            raise SimulGenError(
                f"{what}: the {self.world_size} processes ended with different weights (rank 0 sha256 "
                f"{digests[0][:16]}, different on rank(s) {differing}). DDP must average every gradient: "
                f"check that no parameter is updated outside the optimizer step and that every rank runs "
                f"the same number of steps; report this with the command line if it persists")
        return digest

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def _init_process_group(backend: str, rank: int, world_size: int) -> None:
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:  # RANK/WORLD_SIZE set by another launcher
        dist.init_process_group(backend=backend)
        return
    # torchrun keeps one TCPStore for all attempts of a group, so after --max-restarts a new rank can
    # read the address a dead rank published in the previous attempt and hang or be refused while
    # connecting (pytorch/pytorch#135712; seen here with gloo and static rendezvous). Keys under a
    # per-attempt prefix cannot be stale.
    store, _, _ = next(dist.rendezvous("env://"))
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"simulgenvae/attempt_{attempt}", store),
                            rank=rank, world_size=world_size)


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
        _init_process_group(backend, rank, world_size)
    return Runtime(device=chosen, rank=rank, world_size=world_size, local_rank=local_rank,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
                   distributed=world_size > 1 or use_ddp, amp_dtype=amp_dtype_for(chosen, amp))


def shutdown_runtime(runtime: Runtime) -> None:
    """Leave the process group together: a rank that tore down gloo while its peer still had a collective in
    flight aborted with 'terminate called without an active exception' (seen once in CI's run of the tests)."""
    if not dist.is_initialized():
        return
    # DDP models no longer referenced but held in reference cycles would otherwise be freed at interpreter exit,
    # after their process group is destroyed: free them while it still exists (gloo may abort on the reverse).
    gc.collect()
    # A RuntimeError here means a peer already left (it failed, and its own error is what the user sees):
    # tear down regardless.
    with contextlib.suppress(RuntimeError):
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=SHUTDOWN_BARRIER_SECONDS))
        else:
            dist.barrier()
    dist.destroy_process_group()


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: names, dtypes, shapes and exact bytes of every tensor, in order."""
    hasher = hashlib.sha256()
    for name, tensor in state.items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (state dicts are saved from it)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
