"""The `predict` command: new designs (CSV rows or images) -> full transient fields in physical units."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from modules.data.design_images import IMAGE_EXTENSIONS, load_images_from_paths
from modules.data.design_files import files_in, natural_sort_key
from modules.data.design_tables import data_line_numbers, load_parameter_table
from modules.data.log_spacing import first_without_logarithm
from modules.config import time_window
from modules.data.variables import axis_names
from modules.errors import DataError, SimulGenError
from modules.runtime.devices import choose_device
from modules.storage.array_files import refuse_existing, save_array
from modules.storage.run_directory import RunDirectory
from modules.surrogate.surrogate import Prediction, Surrogate


def read_designs(args: argparse.Namespace, kind: str, num_params: int, image_size: int, channels: int) -> np.ndarray:
    if args.params is not None:
        if kind != "csv":
            raise SimulGenError(f"{args.model}: this conditioner was trained on images; pass --images DIR")
        return load_parameter_table(args.params, num_params)
    if kind != "image":
        raise SimulGenError(f"{args.model}: this conditioner was trained on CSV parameters; pass --params FILE.csv")
    folder = args.images
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder; pass the folder holding one image per design")
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
                   key=lambda p: natural_sort_key(p.name))
    if not paths:
        raise DataError(f"--images {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return load_images_from_paths(paths, image_size, channels)


def require_logarithms(path: Path, designs: np.ndarray, log_columns: Sequence[int]) -> None:
    """Every design positive in the columns the conditioner reads as logarithms (log_parameters), or a DataError
    naming the file and line (a CSV of rows) or the file (a folder of one CSV per design) of the first that is not."""
    found = first_without_logarithm(designs, log_columns)
    if found is None:
        return
    design, column = found
    where = (f"{path}, line {data_line_numbers(path)[design]}" if Path(path).is_file()
             else str(files_in(Path(path), (".csv",))[design]))
    raise DataError(f"--params {where}: parameter {column + 1} is "
                    f"{designs[design, column]:g}, but this model reads that parameter as its logarithm "
                    f"(log_parameters, decided in training), which only a positive value has\n"
                    f"    fix: give it a positive value, as every training design had")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}_{suffix}.npy")


def run_predict(args: argparse.Namespace) -> Prediction:
    outputs: Dict[str, Path] = {"prediction": args.out}
    if args.samples > 0:
        outputs.update(mean=_sibling(args.out, "mean"), std=_sibling(args.out, "std"))
    for path in outputs.values():
        refuse_existing(path, args.overwrite)
    device = choose_device(args.device)
    run_dir = RunDirectory(args.model)
    for needed in (run_dir.vae_bundle, run_dir.conditioner_bundle):
        if not needed.is_file():
            raise SimulGenError(f"--model {args.model}: {needed.name} is missing; train the full model there first "
                                f"(python SimulGen-VAE.py --out {args.model})")
    surrogate = Surrogate.load(run_dir.vae_bundle, device, run_dir.conditioner_bundle)
    conditioner = surrogate.conditioner
    if args.samples > 0 and conditioner.band is not None:
        outputs.update(lower=_sibling(args.out, "lower"), upper=_sibling(args.out, "upper"))
        for name in ("lower", "upper"):
            refuse_existing(outputs[name], args.overwrite)
    # The conditioner's own settings: an --lc_only run may have trained it with another image_size than the VAE run.
    designs = read_designs(args, conditioner.input_kind, conditioner.config.num_params, conditioner.config.image_size,
                           conditioner.in_channels)
    if args.params is not None:
        require_logarithms(args.params, designs, conditioner.input_scaler.log_columns)
    result = surrogate.predict(designs, args.batch_size, args.samples, seed=0)
    if result.mean is None:
        result = replace(result, fields=surrogate.user_layout(result.fields))
    else:
        result = replace(result, fields=surrogate.user_layout(result.fields), mean=surrogate.user_layout(result.mean),
                         std=surrogate.user_layout(result.std))
        if result.lower is not None:
            result = replace(result, lower=surrogate.user_layout(result.lower), upper=surrogate.user_layout(result.upper))
    save_array(args.out, result.fields)
    if result.mean is not None:
        save_array(outputs["mean"], result.mean)
        save_array(outputs["std"], result.std)
        if result.lower is not None:
            save_array(outputs["lower"], result.lower)
            save_array(outputs["upper"], result.upper)
    count = len(designs)
    print(f"predicted {count} design{'s' if count != 1 else ''} in {result.seconds * 1000:.0f} ms "
          f"({result.seconds * 1000 / max(count, 1):.1f} ms per design) on {device}")
    print(f"wrote {args.out}: float32 {list(result.fields.shape)} ({axis_names(surrogate.window, 'designs')}), "
          f"physical units; {time_window.describe(surrogate.window.num_timesteps, surrogate.window.timestep_indices)}")
    if conditioner.blend is not None:
        print(f"the prediction is {conditioner.blend.weight:.1f} x the conditioners' field + "
              f"{1 - conditioner.blend.weight:.1f} x POD + Gaussian processes' (pod_gp_blend auto, weight picked on "
              "the validation designs" + ("; the processes read the conditioners' code of each image"
                                          if conditioner.blend.reads_code else "") + ")")
    if conditioner.amplitude is not None:
        print(f"the fields are predicted as {conditioner.amplitude.describe()} (amplitude_parameter: the "
              "parameter / its training mean scales a predicted unit field about the reference value)")
    if result.mean is not None:
        print(f"wrote {outputs['mean']} and {outputs['std']}: mean and standard deviation of {args.samples} samples")
    if result.lower is not None:
        band = conditioner.band
        print(f"wrote {outputs['lower']} and {outputs['upper']}: prediction +- {band.scale:.3g} x std, calibrated to "
              f"cover {band.nominal:.0%} of held-out values (report.json, conditioner.band, has the measured coverage)")
    if args.vtu is not None:
        _write_vtu(args.vtu, surrogate.coordinates, surrogate.triangles, result, surrogate.window.timestep_indices)
    return result


def _write_vtu(directory: Path, coordinates: Optional[np.ndarray], triangles: Optional[np.ndarray],
               result: Prediction, times: Sequence[int]) -> None:
    """One .pvd series per design; each file's time is the stored timestep of the sweep it stands for."""
    from modules.storage.vtu_export import write_time_series

    if coordinates is None:
        raise SimulGenError("--vtu needs node coordinates, but the model was trained without coordinates_path; "
                            "add coordinates_path to condition.txt and train again")
    for index, field in enumerate(result.fields):
        extra = {}
        if result.std is not None:
            extra = {"sample_mean": result.mean[index], "sample_std": result.std[index]}
        write_time_series(directory, f"design_{index + 1:04d}", coordinates, field, extra=extra, triangles=triangles,
                          times=times)
    print(f"wrote {len(result.fields)} ParaView time series (.pvd + .vtu) to {directory}")
