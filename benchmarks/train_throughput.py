"""Training throughput (cases/s) and peak memory of the VAE stage on the built-in demo sweep.

Runs the real training loop (modules.training.loop.Trainer: shuffling, validation, checkpoints, logging) for a few
epochs and, in the same process, the bare forward/backward/AdamW steps on the same batches: the ratio is the
share of time the loop adds around the network. Peak memory is the process's maximum resident set size.

    python benchmarks/train_throughput.py [--epochs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config.legacy_files import load_run_config  # noqa: E402
from modules.training.losses import physical_node_weights  # noqa: E402
from modules.training.objectives import VAEObjective  # noqa: E402
from modules.training.run_log import RunLog  # noqa: E402
from modules.runtime.distributed import Runtime  # noqa: E402
from modules.data.demo_request import ensure_demo_data  # noqa: E402
from modules.data.prepared_sweep import prepare_sweep  # noqa: E402
from modules.training.checkpointing import Checkpointer, CheckpointPaths  # noqa: E402
from modules.training.loop import Trainer  # noqa: E402
from modules.training import vae_stage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, _ = load_run_config(REPO / "preset.txt", REPO / "input_data" / "condition.txt",
                                cli_values={"train.epochs": ("--epochs", args.epochs), "train.device": ("--device", "cpu")})
    import os
    os.chdir(REPO)  # condition.txt paths are relative to the project
    ensure_demo_data(config.data, REPO)
    sweep = prepare_sweep(config, REPO)
    weights = physical_node_weights(vae_stage.node_half_range(sweep))
    objective = VAEObjective(config.train, weights)

    model = vae_stage.build_vae(config)
    vae_stage.initialise_from_pca(model, sweep, config)
    with tempfile.TemporaryDirectory() as folder:
        log = RunLog(None, None, show_progress=False, stream=io.StringIO())
        runtime = Runtime(torch.device("cpu"))
        checkpoints = Checkpointer(CheckpointPaths(Path(folder) / "last.pt", Path(folder) / "best.pt"), runtime,
                                   "vae", must_match={}, config_snapshot=config.to_dict())
        trainer = Trainer(model, objective, vae_stage.loop_settings(config), runtime, log, checkpoints)
        started = time.perf_counter()
        trainer.fit(sweep.train_set, sweep.val_set)
        loop_seconds = time.perf_counter() - started
    loop_rate = len(sweep.train_set) * args.epochs / loop_seconds

    bare = vae_stage.build_vae(config)
    optimizer = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=1e-3)
    fields = torch.stack([sweep.train_set[i][0] for i in range(len(sweep.train_set))])
    batch = config.train.batch_size
    started = time.perf_counter()
    for epoch in range(args.epochs):
        for start in range(0, len(fields), batch):
            loss, _ = objective(bare, (fields[start:start + batch],), epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    bare_rate = len(fields) * args.epochs / (time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"demo VAE training, {len(sweep.train_set)} training cases x {config.data.timesteps} timesteps x "
          f"{config.data.nodes} nodes, batch {batch}, {args.epochs} epochs, {args.threads} threads, "
          f"{os.cpu_count()} CPUs")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'training loop (validation, checkpoints, logs)':<44}{loop_rate:>9.1f} cases/s")
    print(f"{'bare forward/backward/AdamW steps':<44}{bare_rate:>9.1f} cases/s")
    print(f"{'loop / bare':<44}{loop_rate / bare_rate:>12.2f}")
    print(f"{'peak resident memory':<44}{peak_mib:>8.0f} MiB")


if __name__ == "__main__":
    main()
