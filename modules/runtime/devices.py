"""Which device a model runs on, its mixed-precision type, and running it for inference.

Used by training and by the inference commands alike, so it holds nothing of DDP.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from modules.errors import SimulGenError


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


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
