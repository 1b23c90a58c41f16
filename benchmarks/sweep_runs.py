"""What the feature benchmarks share: a sweep folder (a development sweep, see ../shared/sweeps/README.md, or
'demo'), a condition.txt for it with some keys changed, and a run of the real command that returns its report.

The benchmarks measure through the command line and report.json only, so they measure whatever model the
tool has when they are run.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modules.config.legacy_files import with_keys  # noqa: E402
from modules.config.schema import DataConfig  # noqa: E402
from modules.data.case_split import CaseSplit, split_cases  # noqa: E402

SCRIPT = REPO / "SimulGen-VAE.py"
# The benchmarks' split, written into every condition.txt they run: 70 % train, 10 % validation (picks the kept
# epochs), 20 % test (the held-out cases every figure is measured on, never used for training or selection).
SPLIT_KEYS = {"validation_fraction": "0.1", "test_fraction": "0.2", "split_seed": "0"}


@dataclass(frozen=True)
class Sweep:
    name: str
    dataset: Path
    params: Path
    images: Optional[Path]
    coordinates: Path
    shape: tuple


def open_sweep_folder(folder: str, work: Path) -> Sweep:
    """A development sweep folder (dataset1.npy, params.csv, images/, mesh.npz) or 'demo' (written into
    `work` by the tool's own demo solver on first use)."""
    work.mkdir(parents=True, exist_ok=True)
    if folder == "demo":
        root = work / "demo"
        if not (root / "dataset1.npy").is_file():
            from modules.data.demo_sweep import DemoSweepSpec, ensure_demo_sweep
            ensure_demo_sweep(root, DemoSweepSpec())
        shape = np.load(root / "dataset1.npy", mmap_mode="r").shape
        return Sweep("demo", root / "dataset1.npy", root / "params.csv", root / "images", root / "coordinates.npy",
                     shape)
    root = Path(folder).resolve()  # the runs happen in `work`: a relative path would point elsewhere there
    coordinates = work / f"{root.name}_coordinates.npy"
    if not coordinates.is_file():
        np.save(coordinates, np.load(root / "mesh.npz")["points"])
    shape = np.load(root / "dataset1.npy", mmap_mode="r").shape
    return Sweep(root.name, root / "dataset1.npy", root / "params.csv", root / "images", coordinates, shape)


def condition_text(sweep: Sweep, dataset: Optional[Path] = None, keys: Optional[Dict[str, str]] = None,
                   images: bool = False) -> str:
    """The shipped input_data/condition.txt pointed at `sweep` (or a copy of its array), with `keys` set."""
    cases, steps, nodes = sweep.shape[:3]
    values = {"Dim1": str(cases), "Dim2": str(steps), "Dim3": str(nodes), "data_path": str(dataset or sweep.dataset),
              "coordinates_path": str(sweep.coordinates), "demo_data": "0", "param_dir": str(sweep.params)}
    if images:
        values.update(param_dir=str(sweep.images), input_type="image", param_data_type=".png", num_param="0")
    values.update(SPLIT_KEYS)
    values.update(keys or {})
    return with_keys((REPO / "input_data" / "condition.txt").read_text(), values)


def run_tool(work: Path, name: str, condition: str, *flags: str) -> Dict:
    """Train with this condition.txt into work/name; returns report.json plus 'seconds' (wall time)."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "condition.txt").write_text(condition)
    command = [sys.executable, str(SCRIPT), "--preset=1", "--preset-file", str(REPO / "preset.txt"), "--condition",
               str(folder / "condition.txt"), "--out", str(folder / "out"), "--plot=2", "--quiet", "--device=cpu",
               "--overwrite", *flags]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((folder / "out" / "report.json").read_text())
    report["seconds"] = time.perf_counter() - started
    report["peak_mib"] = peak_memory_from_log((folder / "out" / "train_log.txt").read_text())
    return report


def reconstruct(work: Path, name: str, data: Path) -> np.ndarray:
    """The `reconstruct` command on `data` with the model in work/name/out."""
    target = work / name / "recon.npy"
    command = [sys.executable, str(SCRIPT), "reconstruct", "--model", str(work / name / "out"), "--data", str(data),
               "--out", str(target), "--device", "cpu", "--overwrite"]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"reconstruct failed:\n{done.stderr[-3000:]}")
    return np.load(target)


def benchmark_split(num_cases: int) -> CaseSplit:
    """The split the tool makes with SPLIT_KEYS (train, validation, test case indices)."""
    data = DataConfig(num_cases=num_cases, validation_fraction=float(SPLIT_KEYS["validation_fraction"]),
                      test_fraction=float(SPLIT_KEYS["test_fraction"]), split_seed=int(SPLIT_KEYS["split_seed"]))
    return split_cases(data, Path("."))


def peak_memory_from_log(text: str) -> Optional[float]:
    """The largest 'peak CPU memory N MiB' a stage profile logged."""
    found = [float(value) for value in re.findall(r"peak CPU memory (\d+) MiB", text)]
    return max(found) if found else None


def relative_errors(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """||x - x_hat|| / ||x|| per case."""
    cases = truth.shape[0]
    return np.linalg.norm((estimate - truth).reshape(cases, -1), axis=1) / \
        np.linalg.norm(truth.reshape(cases, -1), axis=1)


def vae_held_out(report: Dict) -> float:
    """Mean relative L2 error of `reconstruct` on the test cases."""
    return report["vae"]["relative_l2"]["vae"]["test"]["mean"]


def prediction_held_out(report: Dict) -> float:
    """Mean relative L2 error of `predict` on the test cases."""
    return report["conditioner"]["prediction_relative_l2"]["conditioner"]["test"]["mean"]


def table(rows: List[List[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
