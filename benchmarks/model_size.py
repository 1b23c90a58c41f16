"""Parameter count and CPU training-step time of the hierarchical VAE, beside the legacy network.

Always measures the legacy shape (16 cases x 4000 nodes x 50 timesteps, filters
1024 512 256 128, latent 32/8, small). Give any of --nodes --timesteps --filters
--batch to also measure that shape (e.g. the demo sweep).

    python benchmarks/model_size.py
    python benchmarks/model_size.py --nodes 1000 --timesteps 40 --filters 256 128 64 32 --batch 16
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config.schema import ModelConfig, TrainConfig  # noqa: E402
from modules.training.losses import vae_loss  # noqa: E402
from modules.models.vae import HierarchicalVAE  # noqa: E402

LEGACY_SHAPE = dict(nodes=4000, timesteps=50, filters=(1024, 512, 256, 128), batch=16)
# Measured by the project lead on the legacy implementation (leesihun/SimulGen-VAE) at LEGACY_SHAPE.
LEGACY_PARAMS = 248_000_000
LEGACY_SECONDS_PER_STEP = 32.0


def time_training_steps(model: HierarchicalVAE, batch: int, steps: int, seed: int) -> List[float]:
    """Seconds of each of `steps` AdamW steps (forward + backward + update), after one warm-up step."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.7 * (2 * torch.rand(batch, model.num_nodes, model.num_timesteps, generator=generator) - 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrainConfig()
    seconds = []
    for step in range(steps + 1):
        start = time.perf_counter()
        terms = vae_loss(model(x, generator=generator), x, 1e-3, cfg)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        if step > 0:
            seconds.append(time.perf_counter() - start)
    return seconds


def measure(nodes: int, timesteps: int, filters: Sequence[int], batch: int, args) -> dict:
    torch.manual_seed(args.seed)
    cfg = ModelConfig(encoder_filters=tuple(filters), latent_dim_main=args.latent_main,
                      latent_dim_hier=args.latent_hier, large=args.large)
    model = HierarchicalVAE(cfg, nodes, timesteps)
    seconds = time_training_steps(model, batch, args.steps, args.seed)
    mean = statistics.mean(seconds)
    return dict(shape=f"{batch}x{nodes}x{timesteps} f={'/'.join(map(str, filters))}",
                params=model.parameter_count(), seconds=mean, spread=max(seconds) - min(seconds),
                cases_per_second=batch / mean)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, help="nodes of the extra shape")
    parser.add_argument("--timesteps", type=int, help="timesteps of the extra shape")
    parser.add_argument("--filters", type=int, nargs="+", help="encoder filters of the extra shape")
    parser.add_argument("--batch", type=int, help="batch size of the extra shape")
    parser.add_argument("--latent-main", type=int, default=32)
    parser.add_argument("--latent-hier", type=int, default=8)
    parser.add_argument("--large", action="store_true", help="two convolutions per block")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per shape, after one warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-legacy", action="store_true", help="measure only the extra shape")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    if not args.skip_legacy:
        rows.append(measure(LEGACY_SHAPE["nodes"], LEGACY_SHAPE["timesteps"],
                            LEGACY_SHAPE["filters"], LEGACY_SHAPE["batch"], args))
    if any(value is not None for value in (args.nodes, args.timesteps, args.filters, args.batch)):
        rows.append(measure(args.nodes or LEGACY_SHAPE["nodes"],
                            args.timesteps or LEGACY_SHAPE["timesteps"],
                            args.filters or LEGACY_SHAPE["filters"], args.batch or LEGACY_SHAPE["batch"], args))
    print(f"fp32 CPU, {args.threads} threads, latent {args.latent_main}/{args.latent_hier}, "
          f"{'large' if args.large else 'small'}, mean of {args.steps} AdamW steps")
    header = f"{'':<14}{'batch x nodes x time, filters':<38}{'params':>12}{'s/step':>10}{'+-':>7}{'cases/s':>9}"
    print(header)
    print("-" * len(header))
    if not args.skip_legacy:
        legacy = LEGACY_SHAPE
        shape = f"{legacy['batch']}x{legacy['nodes']}x{legacy['timesteps']} f={'/'.join(map(str, legacy['filters']))}"
        print(f"{'legacy net':<14}{shape:<38}{LEGACY_PARAMS / 1e6:>11.1f}M{LEGACY_SECONDS_PER_STEP:>10.2f}"
              f"{'':>7}{legacy['batch'] / LEGACY_SECONDS_PER_STEP:>9.2f}")
    for row in rows:
        print(f"{'this net':<14}{row['shape']:<38}{row['params'] / 1e6:>11.1f}M{row['seconds']:>10.2f}"
              f"{row['spread']:>7.2f}{row['cases_per_second']:>9.2f}")


if __name__ == "__main__":
    main()
