"""Out-of-core VAE training at the seed's size: 484 cases x 200 timesteps x 95,008 nodes (36.8 GB float32).

1. Writes a synthetic sweep of that size to --data-dir if it is not there yet (see `synthetic_case`: a few
   smooth spatial modes on a random 3-D point cloud, each with a damped oscillation in time whose rate,
   frequency and amplitude depend on the case's five design parameters, plus 0.5 % white noise). It only has
   to be honest about size and layout: the file is an ordinary .npy, read the way a user's sweep is read.
2. Drops the file from the page cache and times a plain sequential read of it: the I/O floor.
3. Drops it again and runs the real code path of one VAE training epoch with --load_all=0
   (prepare_sweep: shape and NaN check, scaler fit; PCA start of the linear path; vae_stage.train_vae for
   one epoch, with validation before and after it), sampling the memory of this process and its DataLoader
   workers (proportional set size, so shared pages are counted once).
Prints: peak memory, cases/s, the share of step time spent waiting for data, and every phase's time.

    python benchmarks/seed_size_streaming.py --data-dir /tmp/simulgen_seed_size [--cases 484] [--batch-size 4]
        [--num-workers 2] [--keep] [--pod-projected]

Needs ~37 GB of free disk at full size; --cases 24 makes a 1.8 GB rehearsal.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config.legacy_files import load_run_config  # noqa: E402
from modules.storage.run_directory import RunDirectory  # noqa: E402
from modules.training.run_log import RunLog  # noqa: E402
from modules.runtime.distributed import Runtime  # noqa: E402
from modules.data.prepared_sweep import prepare_sweep  # noqa: E402
from modules.training import vae_stage  # noqa: E402

GIB = 2.0**30
NUM_MODES = 12
NUM_DESIGN_PARAMETERS = 5
READ_CHUNK_BYTES = 64 * 2**20


# ----------------------------------------------------------------------------- the synthetic sweep

def spatial_modes(num_nodes: int, rng: np.random.Generator) -> np.ndarray:
    """[NUM_MODES, num_nodes] smooth fields on a random point cloud in the unit cube."""
    points = rng.random((num_nodes, 3), dtype=np.float64)
    centres = rng.random((NUM_MODES, 3))
    widths = rng.uniform(0.15, 0.45, NUM_MODES)
    distance2 = ((points[None, :, :] - centres[:, None, :]) ** 2).sum(axis=2)
    bumps = np.exp(-distance2 / (2 * widths[:, None] ** 2))
    waves = np.cos(np.pi * (points @ rng.integers(1, 4, size=(3, NUM_MODES))).T)
    return (bumps * (0.5 + 0.5 * waves)).astype(np.float32)


def synthetic_case(design: np.ndarray, modes: np.ndarray, num_timesteps: int, rng: np.random.Generator) -> np.ndarray:
    """[num_timesteps, num_nodes] float32: damped oscillations of the modes, rates set by the design."""
    time_axis = np.linspace(0.0, 1.0, num_timesteps)[:, None]
    index = np.arange(NUM_MODES)[None, :]
    rate = 1.0 + 4.0 * design[index % NUM_DESIGN_PARAMETERS]
    frequency = 2.0 + 6.0 * design[(index + 1) % NUM_DESIGN_PARAMETERS]
    amplitude = (0.5 + design[(index + 2) % NUM_DESIGN_PARAMETERS]) / (1.0 + index)
    coefficients = amplitude * (1.0 - np.exp(-rate * time_axis)) * np.cos(frequency * time_axis)
    field = (coefficients.astype(np.float32) @ modes)
    field += rng.standard_normal(field.shape, dtype=np.float32) * np.float32(0.005 * float(np.abs(field).max()))
    return field


def write_sweep(path: Path, num_cases: int, num_timesteps: int, num_nodes: int) -> float:
    """Write the sweep case by case (never whole in memory); returns seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(2026)
    modes = spatial_modes(num_nodes, rng)
    designs = rng.random((num_cases, NUM_DESIGN_PARAMETERS))
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (num_cases, num_timesteps, num_nodes)}
        np.lib.format.write_array_header_2_0(handle, header)
        for case in range(num_cases):
            handle.write(synthetic_case(designs[case], modes, num_timesteps, rng).tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    np.savetxt(path.parent / "params.csv", designs, delimiter=",", fmt="%.6f")
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- measuring

def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sequential_read_seconds(path: Path) -> float:
    """A plain front-to-back read of the whole file into one reused buffer: the I/O floor."""
    buffer = bytearray(READ_CHUNK_BYTES)
    view = memoryview(buffer)
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(view):
            pass
    return time.perf_counter() - started


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _children(pid: int) -> List[int]:
    found: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class MemorySampler(threading.Thread):
    """Peak summed PSS of this process and all its descendants, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_bytes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids, frontier = [], [os.getpid()]
            while frontier:
                pid = frontier.pop()
                pids.append(pid)
                frontier += _children(pid)
            self.peak_bytes = max(self.peak_bytes, sum(_pss_bytes(pid) for pid in pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def write_condition(folder: Path, dataset: Path, num_cases: int, num_timesteps: int, num_nodes: int,
                    batch_size: int, num_workers: int, pod_projected: bool) -> Path:
    condition = folder / "condition.txt"
    condition.write_text("\n".join([
        f"Dim1 {num_cases}", f"Dim2 {num_timesteps}", f"Dim3 {num_nodes}", "num_var 1",
        f"data_path {dataset}", "Training_epochs 1", f"Batch_size {batch_size}", "LearningR 0.001",
        "Latent_dim 8", "Latent_dim_end 32", "Loss_type 1", "alpha 100000", "beta_target 0.001",
        f"num_workers {num_workers}", "num_param 5", f"param_dir {dataset.parent / 'params.csv'}",
        f"pod_projected_training {int(pod_projected)}", ""]))
    return condition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=484)
    parser.add_argument("--timesteps", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=95008)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated sweep for the next run")
    parser.add_argument("--pod-projected", action="store_true",
                        help="pod_projected_training 1: train on each case's POD coefficients (one projection pass)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    dataset = args.data_dir / f"seed_{args.cases}x{args.timesteps}x{args.nodes}.npy"
    size_gib = args.cases * args.timesteps * args.nodes * 4 / GIB
    timings: Dict[str, float] = {}
    if not dataset.is_file():
        timings["generate and write the sweep"] = write_sweep(dataset, args.cases, args.timesteps, args.nodes)

    drop_from_page_cache(dataset)
    floor = sequential_read_seconds(dataset)
    timings["plain sequential read of the file (I/O floor)"] = floor
    drop_from_page_cache(dataset)

    sampler = MemorySampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        condition = write_condition(folder, dataset, args.cases, args.timesteps, args.nodes,
                                    args.batch_size, args.num_workers, args.pod_projected)
        preset = Path(__file__).resolve().parents[1] / "preset.txt"
        config, _ = load_run_config(preset, condition, cli_values={
            "data.load_all": ("--load_all", False), "train.device": ("--device", "cpu")})
        started = time.perf_counter()
        sweep = prepare_sweep(config, folder)
        timings["check (shape, NaN/Inf) + scaler fit: two streamed passes"] = time.perf_counter() - started
        log_stream = io.StringIO()
        log = RunLog(None, None, show_progress=False, stream=log_stream)
        runtime = Runtime(torch.device("cpu"))
        run_dir = RunDirectory(folder / "run")
        started = time.perf_counter()
        model, result = vae_stage.train_vae(config, sweep, runtime, run_dir, log)
        timings["VAE stage: PCA start + validation + 1 epoch + validation + save"] = time.perf_counter() - started
    sampler.stop()

    phases = result.phase_seconds
    step_seconds = sum(phases[name] for name in ("data", "forward", "backward", "optimizer"))
    train_cases = len(sweep.train_indices)
    print(f"seed-size streaming benchmark: {args.cases} cases x {args.timesteps} timesteps x {args.nodes} nodes "
          f"float32 = {size_gib:.1f} GiB; batch {args.batch_size}, {args.num_workers} DataLoader workers, "
          f"{args.threads} threads, {os.cpu_count()} CPUs, {model.parameter_count():,} VAE parameters"
          + (", pod_projected_training 1" if args.pod_projected else ""))
    for name, seconds in timings.items():
        print(f"  {name:<66}{seconds:9.1f} s")
    print(f"  {'I/O floor throughput':<66}{size_gib / floor:9.2f} GiB/s")
    print(f"  {'training epoch: cases/s (training steps only)':<66}{train_cases / step_seconds:9.2f}")
    print(f"  {'training epoch: share of step time waiting for data':<66}{phases['data'] / step_seconds:9.1%}")
    print("  phase seconds: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items()))
    print(f"  {'peak memory, this process + DataLoader workers (summed PSS)':<66}{sampler.peak_bytes / GIB:9.2f} GiB")
    print(f"  {'peak resident memory of this process (ru_maxrss)':<66}"
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:9.2f} GiB")
    print(f"  {'peak resident memory of the largest worker (ru_maxrss)':<66}"
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:9.2f} GiB")
    print("log:\n" + "\n".join("  " + line for line in log_stream.getvalue().splitlines() if "profile" in line
                                or "time:" in line or "linear path" in line or "project" in line))
    if not args.keep:
        dataset.unlink()


if __name__ == "__main__":
    main()
