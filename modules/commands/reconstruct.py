"""The `reconstruct` command: a saved VAE run on any dataset file, output in physical units."""
from __future__ import annotations

import argparse
import dataclasses

from pathlib import Path

import numpy as np
import torch

from modules.data.sweep_file import check_sweep, open_sweep, read_cases
from modules.config import time_window
from modules.data.variables import axis_names
from modules.errors import DataError
from modules.runtime import memory
from modules.runtime.devices import choose_device
from modules.storage.array_files import refuse_existing, save_array
from modules.storage.run_directory import RunDirectory
from modules.surrogate.conditioner_bundle import load_conditioner_bundle
from modules.surrogate.surrogate import Surrogate
from modules.surrogate.vae_bundle import resolve_vae_bundle_path


def run_reconstruct(args: argparse.Namespace) -> np.ndarray:
    refuse_existing(args.out, args.overwrite)
    device = choose_device(args.device)
    surrogate = _reconstructing_surrogate(resolve_vae_bundle_path(args.model), device)
    array = open_sweep(args.data)
    if array.ndim not in (3, 4):
        raise DataError(f"{args.data}: expected an array [cases, timesteps, nodes], found {array.ndim} axes")
    # Any number of cases; timesteps and nodes must be those the model was trained on.
    data = dataclasses.replace(surrogate.window, num_cases=array.shape[0])
    check_sweep(array, data, args.data, condition_file="the trained model's condition.txt")
    out = np.empty((array.shape[0], data.timesteps, data.channels), dtype=np.float32)
    for cases in memory.chunk_slices(array.shape[0], args.batch_size):
        out[cases] = surrogate.reconstruct(read_cases(array, range(array.shape[0])[cases], data), args.batch_size)
    out = surrogate.user_layout(out)
    save_array(args.out, out)
    print(f"wrote {args.out}: reconstruction {list(out.shape)} ({axis_names(data)}) in physical units, decoded by "
          f"{surrogate.reconstruction_decoder_text}; "
          f"{time_window.describe(data.num_timesteps, data.timestep_indices)}")
    return out


def _reconstructing_surrogate(vae_path: Path, device: torch.device) -> Surrogate:
    """The VAE, with the run's conditioner bundle beside it when training picked one of its prediction decoders, or
    inverse design through its prediction path, to reconstruct (reconstruction_decoder auto): reconstruct then
    gives what the report measured."""
    conditioner_path = RunDirectory(vae_path.parent).conditioner_bundle
    surrogate = Surrogate.load(vae_path, device)
    if not conditioner_path.is_file():
        return surrogate
    conditioner = load_conditioner_bundle(conditioner_path, device)
    if conditioner.reconstruction_member is None and conditioner.reconstruction_designs is None:
        return surrogate
    return surrogate.with_conditioner(conditioner, conditioner_path)
