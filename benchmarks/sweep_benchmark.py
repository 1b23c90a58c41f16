"""The tool against the classic reduced-order models on a sweep folder, with the shipped defaults.

A sweep folder holds dataset1.npy [case, time, node], params.csv (header + one row per case), split.json
({"train": [...], "test": [...]}), and optionally images/case_NNNN.png and mesh.npz (points, triangles), as
the development sweeps in ../shared/sweeps. The benchmark writes a condition.txt for it from the shipped
input_data/condition.txt (only the data lines change: Dim1-3, data_path, param_dir, num_param, demo_data 0,
split_file, and the mesh), runs the main command as a user would, and prints the report's errors on the
held-out test designs (never used for training nor for picking epochs) beside PCA with as many components
as the model has latent numbers and POD + GP, with the training time. With --images it then trains the
conditioner again on the design images (--lc_only=1 on the same VAE).

    python benchmarks/sweep_benchmark.py ../shared/sweeps/front-dev --out /tmp/bench_front
    python benchmarks/sweep_benchmark.py ../shared/sweeps/impact-dev --out /tmp/bench_impact --images
    python benchmarks/sweep_benchmark.py --demo --out /tmp/bench_demo

--set KEY=VALUE (repeatable) changes one more condition.txt key, for ablations.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONDITION = ROOT / "input_data" / "condition.txt"


def condition_text(template: str, settings: Dict[str, str]) -> str:
    """The template with each key of `settings` set (replaced where the key starts a line, else appended)."""
    lines = template.splitlines()
    remaining = dict(settings)
    for number, line in enumerate(lines):
        tokens = line.split()
        key = tokens[0] if tokens else ""
        if key.startswith("#") and len(tokens) > 1:
            key = tokens[1] if tokens[0] == "#" else key.lstrip("#")
        if key in remaining:
            lines[number] = f"{key}\t{remaining.pop(key)}"
    lines += [f"{key}\t{value}" for key, value in remaining.items()]
    return "\n".join(lines) + "\n"


def sweep_settings(sweep: Path, out: Path, images: bool) -> Dict[str, str]:
    """The data lines of condition.txt for a sweep folder (writing the mesh files it needs into `out`)."""
    array = np.load(sweep / "dataset1.npy", mmap_mode="r")
    num_params = len(next(open(sweep / "params.csv")).strip().split(","))
    settings = {"Dim1": str(array.shape[0]), "Dim2": str(array.shape[1]), "Dim3": str(array.shape[2]),
                "data_path": str(sweep / "dataset1.npy"), "demo_data": "0", "num_param": str(num_params),
                "param_dir": str(sweep / ("images" if images else "params.csv")),
                "input_type": "image" if images else "csvs", "test_fraction": "0"}
    if (sweep / "split.json").is_file():
        settings["split_file"] = str(sweep / "split.json")
    if (sweep / "mesh.npz").is_file():
        mesh = np.load(sweep / "mesh.npz")
        np.save(out / "coordinates.npy", mesh["points"])
        settings["coordinates_path"] = str(out / "coordinates.npy")
        if "triangles" in mesh:
            np.save(out / "triangles.npy", mesh["triangles"].astype(np.int64))
            settings["mesh_connectivity_path"] = str(out / "triangles.npy")
    return settings


def run(command: List[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as stream:
        finished = subprocess.run(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"command failed ({finished.returncode}): {' '.join(command)}\nsee {log}")
    return seconds


def pooled(section: Dict, model: str, split: str) -> Optional[float]:
    return section.get(model, {}).get(split, {}).get("pooled")


def _blend_note(blend: Optional[Dict]) -> str:
    if not blend:
        return ""
    return f", {blend['weight_on_conditioners']:.1f} x it + {1 - blend['weight_on_conditioners']:.1f} x POD + GP"


SPAN_FLOOR_MAX_VALUES = 200_000_000
"""The linear floor is computed in memory (float64) up to this many values of the non-test fields."""


def training_span_error(sweep: Path) -> Optional[float]:
    """The test fields' error after projection onto the span of every non-test field (centred): what any linear
    reduction fitted to these fields reaches at best, with as many components as there are non-test cases. On the
    development sweeps 0.156 (impact) and 0.315 (front): the issue's 0.5 x PCA 56 (0.12 / 0.21) asks for better
    than that, which only a decoder that generalises beyond the training fields' span can give (README). None
    without a split file or when the fields are too large to hold."""
    if not (sweep / "split.json").is_file():
        return None
    split = json.loads((sweep / "split.json").read_text())
    array = np.load(sweep / "dataset1.npy", mmap_mode="r")
    known = sorted(set(range(array.shape[0])) - set(split.get("test", [])))
    if not split.get("test") or len(known) * int(np.prod(array.shape[1:])) > SPAN_FLOOR_MAX_VALUES:
        return None
    train = np.asarray(array[known], dtype=np.float64).reshape(len(known), -1)
    test = np.asarray(array[split["test"]], dtype=np.float64).reshape(len(split["test"]), -1)
    mean = train.mean(axis=0)
    modes = np.linalg.svd(train - mean, full_matrices=False)[2]
    projected = mean + (test - mean) @ modes.T @ modes
    return float(np.linalg.norm(projected - test) / np.linalg.norm(test))


def print_report(name: str, report: Dict, seconds: float, baselines: Optional[Dict],
                 span_error: Optional[float] = None) -> None:
    vae, lc = report["vae"], report["conditioner"]
    split = "test" if "test" in vae["relative_l2"]["vae"] else "val"
    recon, prediction = vae["relative_l2"], lc["prediction_relative_l2"]
    print(f"\n{name}: errors ||X - X_hat||_F / ||X||_F over the {split} designs; training + report {seconds:.0f} s")
    model = f"VAE ({vae['latent_numbers']} latent numbers)"
    if vae.get("reconstruction_decoder") == "design":
        model = f"inverse design ({vae.get('reconstruction_numbers', '?')} design numbers)"
    rows = [(f"reconstruct: {model}", pooled(recon, "vae", split)),
            (f"reconstruct: PCA ({vae['pca_components']} components)", pooled(recon, "pca", split)),
            (f"predict from {lc['input_type']}: {lc['architecture']} conditioner + decoder"
             + _blend_note(lc.get("pod_gp_blend")), pooled(prediction, "conditioner", split))]
    if "network" in prediction:
        rows.append(("predict: the conditioner + decoder alone", pooled(prediction, "network", split)))
    rows += [(f"predict: POD ({lc['pod_gp_modes']} modes) + GP per mode (the tool's baseline)",
              pooled(prediction, "pod_gp", split)),
             ("predict: nearest training design", pooled(prediction, "nearest_neighbour", split))]
    for label, value in rows:
        print(f"  {label:<70} {value:.4f}" if value is not None else f"  {label:<70} -")
    if baselines is not None:
        raw = baselines["raw"]
        best = min((entry["rel_l2"], key) for key, entry in raw["parametric"].items() if "gpr" in key or "rbf" in key)
        print(f"  {'baselines.json: PCA 8 / 32 / 56':<70} "
              + " / ".join(f"{raw['pca'][k]['rel_l2']:.4f}" for k in ("8", "32", "56")))
        print(f"  {'baselines.json: best POD + GP/RBF (' + best[1] + ')':<70} {best[0]:.4f}")
    if span_error is not None:
        print(f"  {'linear floor: projection onto every non-test field (centred)':<70} {span_error:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", type=Path, help="sweep folder (see above)")
    parser.add_argument("--demo", action="store_true", help="the built-in demo sweep instead (its seeded split)")
    parser.add_argument("--out", type=Path, required=True, help="folder for condition.txt, the runs and logs")
    parser.add_argument("--images", action="store_true", help="also train the conditioner on the design images")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one more condition.txt key")
    args = parser.parse_args()
    if not args.demo and args.sweep is None:
        parser.error("give a sweep folder or --demo")
    args.out.mkdir(parents=True, exist_ok=True)
    template = SHIPPED_CONDITION.read_text()
    settings = {} if args.demo else sweep_settings(args.sweep.resolve(), args.out.resolve(), images=False)
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value
    condition = args.out / "condition.txt"
    condition.write_text(condition_text(template, settings))
    main_command = [sys.executable, "SimulGen-VAE.py", "--preset=1", "--plot=2", "--lc_only=0", "--size=small",
                    "--load_all=1", "--condition", str(condition.resolve()), "--out", str((args.out / "run").resolve()),
                    "--overwrite", "--quiet"]
    seconds = run(main_command, args.out / "run.log")
    report = json.loads((args.out / "run" / "report.json").read_text())
    name = "demo" if args.demo else args.sweep.name
    baselines = None
    if not args.demo and (args.sweep.parent / "baselines.json").is_file():
        every = json.loads((args.sweep.parent / "baselines.json").read_text())
        baselines = every.get(re.sub(r"-dev$", "", args.sweep.name))
    print_report(name, report, seconds, baselines, None if args.demo else training_span_error(args.sweep.resolve()))
    if args.images and not args.demo:
        image_settings = dict(settings, **sweep_settings(args.sweep.resolve(), args.out.resolve(), images=True))
        image_settings["e2e_vae_model_path"] = str((args.out / "run" / "SimulGen-VAE").resolve())
        image_condition = args.out / "condition_images.txt"
        image_condition.write_text(condition_text(template, image_settings))
        image_command = [part if part != str(condition.resolve()) else str(image_condition.resolve())
                         for part in main_command]
        image_command[image_command.index("--lc_only=0")] = "--lc_only=1"
        image_command[image_command.index(str((args.out / "run").resolve()))] = str((args.out / "images").resolve())
        seconds = run(image_command, args.out / "images.log")
        print_report(f"{name}, design images", json.loads((args.out / "images" / "report.json").read_text()),
                     seconds, baselines)


if __name__ == "__main__":
    main()
