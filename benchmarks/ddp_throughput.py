"""VAE training throughput on CPU: 1 process vs 2 DDP processes (gloo) on the demo's shape, in one run.

    python benchmarks/ddp_throughput.py [--cases 128] [--epochs 4] [--batch-size 16] [--repeats 2]

Each configuration is started with torchrun and trains the preset-1 VAE (filters 128 64 32 16, latent
32 + 3 x 8) with the project's own Trainer and VAEObjective on synthetic fields of the demo's shape
(40 timesteps x 1024 nodes; the values do not change the cost). The number reported is the Trainer's
own cases/s, counted over all ranks: every case of every epoch, including the first epoch, a one-case
validation per rank and the checkpoint written each epoch, divided by the wall time of fit().

Configurations, all with the same global batch:
  1 process x 1 thread, 1 process x all cores, N processes x (cores / N) threads (N = 2).
The ratio printed is the 2-process throughput over the 1-process-all-cores throughput: the gain of
DDP on the same cores. Each configuration runs --repeats times, interleaved, and the best run counts
(the least disturbed by other programs). The share of CPU time other programs used during the best
run is printed with it: anything above a few percent makes that number meaningless, as OpenMP threads
that wait on a busy core slow down many times over.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "THROUGHPUT_RESULT "
DEMO_TIMESTEPS, DEMO_NODES = 40, 1024
DEMO_MODES = 64  # spatial modes of the VAE's frozen basis (the demo keeps about 66)
PRESET_FILTERS = (128, 64, 32, 16)


def cpu_description() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical cores"


def worker(args: argparse.Namespace) -> None:
    """One rank: train and, on rank 0, print the result line."""
    import io

    import torch
    from torch.utils.data import TensorDataset

    from modules.config.schema import ModelConfig, TrainConfig
    from modules.training.objectives import VAEObjective
    from modules.training.run_log import RunLog
    from modules.runtime.distributed import setup_runtime, shutdown_runtime
    from modules.training.checkpointing import Checkpointer, CheckpointPaths
    from modules.training.loop import LoopSettings, Trainer
    from modules.models.vae import HierarchicalVAE

    torch.set_num_threads(args.threads)
    runtime = setup_runtime("cpu", amp=False, use_ddp=False)
    try:
        generator = torch.Generator().manual_seed(0)
        total = args.cases + runtime.world_size  # one validation case per rank
        fields = (torch.rand(total, DEMO_NODES, DEMO_TIMESTEPS, generator=generator) - 0.5) * 1.4
        train_set, val_set = TensorDataset(fields[:args.cases]), TensorDataset(fields[args.cases:])
        torch.manual_seed(0)
        model = HierarchicalVAE(ModelConfig(encoder_filters=PRESET_FILTERS, latent_dim_main=32, latent_dim_hier=8),
                                DEMO_NODES, DEMO_TIMESTEPS, DEMO_MODES)
        model.basis.set_modes(torch.linalg.qr(torch.randn(DEMO_NODES, DEMO_MODES, generator=generator))[0], None, 1.0)
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, recon_weight=1000.0)
        settings = LoopSettings(name="vae", epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3,
                                weight_decay=1e-4, grad_clip=5.0, lr_schedule="cosine", min_lr_fraction=0.05,
                                early_stopping_patience=0, checkpoint_every=1, seed=0)
        with tempfile.TemporaryDirectory() as folder:
            log = RunLog(None, None, enabled=False, show_progress=False, stream=io.StringIO())
            checkpoints = Checkpointer(CheckpointPaths(Path(folder) / "last.pt", Path(folder) / "best.pt"), runtime,
                                       "vae", {}, {})
            trainer = Trainer(model, VAEObjective(train), settings, runtime, log, checkpoints)
            result = trainer.fit(train_set, val_set)
        if runtime.is_main:
            print(RESULT_PREFIX + json.dumps({"cases_per_second": result.samples_per_second,
                                              "seconds": result.seconds}), flush=True)
    finally:
        shutdown_runtime(runtime)


def _cpu_ticks() -> Tuple[int, int, int]:
    """(ticks used by this benchmark's finished children, busy ticks of all cores, all ticks of all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    times = os.times()
    own = int((times.children_user + times.children_system) * os.sysconf("SC_CLK_TCK"))
    return own, sum(fields) - idle, sum(fields)


def measure(processes: int, threads: int, args: argparse.Namespace) -> Dict[str, float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(Path(__file__).resolve()), "--worker", f"--threads={threads}", f"--cases={args.cases}",
               f"--epochs={args.epochs}", f"--batch-size={args.batch_size}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    own_before, busy_before, all_before = _cpu_ticks()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    own_after, busy_after, all_after = _cpu_ticks()
    if done.returncode != 0:
        raise SystemExit(f"ddp_throughput: {processes} process(es) failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    result = json.loads(line[len(RESULT_PREFIX):])
    others = (busy_after - busy_before) - (own_after - own_before)
    result["others_cpu_share"] = max(0.0, others / max(all_after - all_before, 1))
    return result


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=128, help="training cases (the demo trains on 128)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (the demo's Batch_size)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration; the best counts")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    import torch

    cores = os.cpu_count() or 1
    print(f"machine: {cpu_description()}; torch {torch.__version__}; gloo; "
          f"{args.cases} cases of {DEMO_TIMESTEPS} timesteps x {DEMO_NODES} nodes, global batch {args.batch_size}, "
          f"{args.epochs} epochs, VAE filters {' '.join(map(str, PRESET_FILTERS))}")
    rows = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    best: Dict[Tuple[int, int], Dict[str, float]] = {}
    for _ in range(args.repeats):
        for row in rows:
            result = measure(*row, args)
            if row not in best or result["cases_per_second"] > best[row]["cases_per_second"]:
                best[row] = result
    for (processes, threads), result in best.items():
        print(f"  {processes} process(es) x {threads} thread(s): {result['cases_per_second']:7.1f} cases/s "
              f"(fit {result['seconds']:.1f} s; other programs used {100 * result['others_cpu_share']:.0f} % "
              f"of the CPU meanwhile)", flush=True)
    one = best[(1, cores)]["cases_per_second"]
    two = best[(2, max(1, cores // 2))]["cases_per_second"]
    print(f"ratio 2 processes / 1 process on the same {cores} cores: {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
