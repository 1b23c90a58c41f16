"""The `reconstruct` command: a saved VAE run on any dataset file, output in physical units."""
from __future__ import annotations

import argparse
import dataclasses

from pathlib import Path

import numpy as np
import torch

from modules.data.design_tables import write_parameter_table
from modules.data.sweep_file import check_sweep, open_sweep, read_cases
from modules.config import time_window
from modules.data.variables import axis_names
from modules.errors import DataError, SimulGenError
from modules.runtime import memory
from modules.runtime.devices import choose_device
from modules.storage.array_files import refuse_existing, save_array
from modules.storage.run_directory import RunDirectory
from modules.storage.state_files import write_atomically
from modules.surrogate.conditioner_bundle import load_conditioner_bundle
from modules.surrogate.inverse_design import outside_training_range
from modules.surrogate.surrogate import Surrogate
from modules.surrogate.vae_bundle import resolve_vae_bundle_path


def run_reconstruct(args: argparse.Namespace) -> np.ndarray:
    refuse_existing(args.out, args.overwrite)
    if args.designs is not None:
        if args.designs.suffix.lower() != ".csv":
            raise SimulGenError(f"--designs {args.designs}: the inverse designs are written as a CSV table; use e.g. "
                                "--designs designs.csv")
        refuse_existing(args.designs, args.overwrite)
    device = choose_device(args.device)
    surrogate = _reconstructing_surrogate(resolve_vae_bundle_path(args.model), device, args.designs is not None)
    array = open_sweep(args.data)
    if array.ndim not in (3, 4):
        raise DataError(f"{args.data}: expected an array [cases, timesteps, nodes], found {array.ndim} axes")
    # Any number of cases; timesteps and nodes must be those the model was trained on.
    data = dataclasses.replace(surrogate.window, num_cases=array.shape[0])
    check_sweep(array, data, args.data, condition_file="the trained model's condition.txt")
    out = np.empty((array.shape[0], data.timesteps, data.channels), dtype=np.float32)
    designs = []
    for cases in memory.chunk_slices(array.shape[0], args.batch_size):
        fields = read_cases(array, range(array.shape[0])[cases], data)
        if args.designs is None:
            out[cases] = surrogate.reconstruct(fields, args.batch_size)
        else:
            out[cases], found = surrogate.reconstruct_with_designs(fields, args.batch_size)
            designs.append(found)
    out = surrogate.user_layout(out)
    save_array(args.out, out)
    print(f"wrote {args.out}: reconstruction {list(out.shape)} ({axis_names(data)}) in physical units, decoded by "
          f"{surrogate.reconstruction_decoder_text}; "
          f"{time_window.describe(data.num_timesteps, data.timestep_indices)}")
    if args.designs is not None:
        table = np.concatenate(designs)
        conditioner = surrogate.conditioner
        names = conditioner.parameter_names or [f"parameter_{column + 1}" for column in range(table.shape[1])]
        write_atomically(args.designs, lambda stream: write_parameter_table(stream, names, table), mode="w")
        print(f"wrote {args.designs}: the {len(table)} designs (the parameter table's columns, its units) whose "
              f"prediction matches each field best (inverse design)")
        outside = outside_training_range(table, conditioner.input_scaler.inverse(
            conditioner.training_designs.double().numpy()))
        if outside.any():
            rows = ", ".join(str(row + 1) for row in np.flatnonzero(outside)[:10])
            verb = "lies" if outside.sum() == 1 else "lie"
            print(f"note: {int(outside.sum())} of them {verb} outside the training designs' range (rows {rows}"
                  f"{', ...' if outside.sum() > 10 else ''}): the surrogate extrapolates there, so treat those "
                  "parameters as rough")
    return out


def _reconstructing_surrogate(vae_path: Path, device: torch.device, inverse_design: bool) -> Surrogate:
    """The VAE, with the run's conditioner bundle beside it when training picked one of its prediction decoders, or
    inverse design through its prediction path, to reconstruct (reconstruction_decoder auto): reconstruct then
    gives what the report measured; and whenever `inverse_design` (--designs) needs the prediction path."""
    conditioner_path = RunDirectory(vae_path.parent).conditioner_bundle
    surrogate = Surrogate.load(vae_path, device)
    if not conditioner_path.is_file():
        if inverse_design:
            raise SimulGenError(f"--designs needs the run's latent conditioner: {conditioner_path} is missing; train "
                                f"it there first (python SimulGen-VAE.py --lc_only=1 --out {vae_path.parent})")
        return surrogate
    conditioner = load_conditioner_bundle(conditioner_path, device)
    if conditioner.reconstruction_member is None and not conditioner.reconstructs_by_design and not inverse_design:
        return surrogate
    return surrogate.with_conditioner(conditioner, conditioner_path)
