"""VAE training throughput (cases/s), where its time goes, and what the fused AdamW step buys.

Runs the real VAE stage (modules.training.vae_stage.train_vae: projection, shuffling, validation, checkpoints)
for a few epochs on the built-in demo sweep or on a sweep folder (the layout of ../shared/sweeps/), once with
the optimizer the tool uses (training.loop.make_adamw: fused where torch has it) and once with torch's default
per-tensor AdamW, alternating the two `--rounds` times in one process so that a shared, noisy machine slows both
alike. Prints cases/s of each, their ratio, the loop's phase shares and the peak resident memory.

    python benchmarks/train_throughput.py [SWEEP_FOLDER | demo] [--epochs 20] [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import condition_text, open_sweep_folder  # noqa: E402
from modules.config.legacy_files import load_run_config  # noqa: E402
from modules.data.demo_request import ensure_demo_data  # noqa: E402
from modules.data.design_features import design_features  # noqa: E402
from modules.data.designs import load_design_array  # noqa: E402
from modules.data.prepared_sweep import prepare_sweep  # noqa: E402
from modules.runtime.distributed import Runtime  # noqa: E402
from modules.storage.run_directory import RunDirectory  # noqa: E402
from modules.training import loop, vae_stage  # noqa: E402
from modules.training.run_log import RunLog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("tool (fused where available)", "torch default AdamW")


@contextlib.contextmanager
def optimizer_variant(name: str) -> Iterator[None]:
    """The tool's make_adamw, or torch's default AdamW in its place for the duration."""
    if name == VARIANTS[0]:
        yield
        return
    tool = loop.make_adamw
    loop.make_adamw = lambda parameters, lr, decay: torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    try:
        yield
    finally:
        loop.make_adamw = tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", nargs="?", default="demo", help="a sweep folder, or 'demo' (default)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as folder:
        measure(args, Path(folder))


def measure(args: argparse.Namespace, work: Path) -> None:
    """Train the VAE stage with each optimizer in turn, in `work` (removed afterwards), and print the figures."""
    condition = REPO / "input_data" / "condition.txt"
    if args.sweep != "demo":
        condition = work / "condition.txt"
        condition.write_text(condition_text(open_sweep_folder(args.sweep, work)))
    cli = {"train.epochs": ("--epochs", args.epochs), "train.device": ("--device", "cpu"),
           "train.training_minutes": ("--training_minutes", 0.0)}
    config, _ = load_run_config(REPO / "preset.txt", condition, cli_values=cli)
    os.chdir(REPO)  # the shipped condition.txt's paths are relative to the project
    ensure_demo_data(config.data, REPO)
    runtime = Runtime(torch.device("cpu"))
    sweep = prepare_sweep(config, REPO, runtime)
    designs = load_design_array(config.conditioner, REPO, config.data.num_cases)
    features = design_features(designs, sweep.train_indices) if config.uses_design_prior else None

    rates: Dict[str, List[float]] = {name: [] for name in VARIANTS}
    phases: Dict[str, float] = {}
    for round_index in range(args.rounds):
        for name in VARIANTS if round_index % 2 == 0 else reversed(VARIANTS):
            with tempfile.TemporaryDirectory(dir=work) as folder, optimizer_variant(name):
                log = RunLog(None, None, show_progress=False, stream=io.StringIO())
                _, result, _ = vae_stage.train_vae(config, sweep, runtime, RunDirectory(Path(folder)), log,
                                                   features, None)
            rates[name].append(result.samples_per_second)
            if name == VARIANTS[0]:
                for phase, seconds in result.phase_seconds.items():
                    phases[phase] = phases.get(phase, 0.0) + seconds
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tool, default = (statistics.median(rates[name]) for name in VARIANTS)
    print(f"VAE stage on {args.sweep}: {len(sweep.train_indices)} training cases x {config.data.timesteps} "
          f"timesteps x {config.data.nodes} nodes, batch {config.train.batch_size}, {args.epochs} epochs x "
          f"{args.rounds} rounds per optimizer, {args.threads} threads, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}")
    print(f"{'measure':<44}{'value':>14}")
    for name in VARIANTS:
        print(f"{name:<44}{statistics.median(rates[name]):>8.1f} cases/s  (rounds: "
              + ", ".join(f"{rate:.1f}" for rate in rates[name]) + ")")
    print(f"{'tool / default (cases/s ratio)':<44}{tool / default:>14.2f}")
    total = sum(phases.values()) or 1.0
    print(f"{'where the tool variant spends its time':<44}"
          + ", ".join(f"{phase} {seconds / total:.0%}" for phase, seconds in phases.items()))
    print(f"{'peak resident memory':<44}{peak_mib:>10.0f} MiB")


if __name__ == "__main__":
    main()
