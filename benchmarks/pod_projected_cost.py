"""Cost of one VAE training step on full fields vs on POD coefficients (pod_projected_training 1).

For each mesh shape, the same model (linear path on an orthonormal random basis, filters 128 64 32 16,
latents 32 + 3 x 8) takes AdamW steps on the same random batch, once through the full fields (VAEObjective)
and once through their projection (ProjectedVAEObjective). Reported: seconds per training case of a step
(forward, loss, backward, AdamW), the step's peak resident memory (Linux VmHWM, reset before each mode,
with the batch and the model counted) and the loss of both modes, which must agree. The one-time projection
of a case (modules.training.projected_training.project_fields) is timed too: it is paid once, not every epoch.

    python benchmarks/pod_projected_cost.py [--threads 1] [--batch 4] [--shapes 1024x40 95008x200]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules.config.schema import ModelConfig, TrainConfig  # noqa: E402
from modules.models.linear_path import LinearPathInit  # noqa: E402
from modules.training.losses import physical_node_weights  # noqa: E402
from modules.training.objectives import VAEObjective  # noqa: E402
from modules.training.projected_training import (ProjectedSweep, ProjectedVAEObjective, channel_gram,  # noqa: E402
                                        physical_per_weighted, project_fields)
from modules.data.scaling import SCALED_LIMIT  # noqa: E402
from modules.models.vae import HierarchicalVAE  # noqa: E402

MIB = 2 ** 20


def peak_reset() -> None:
    """Start a new high-water mark of this process's resident memory (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def resident(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset), in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def build(num_nodes: int, num_timesteps: int, seed: int = 0) -> Tuple[HierarchicalVAE, torch.Tensor]:
    """The model with its linear path set to an orthonormal random basis (a POD's structure, cheaply) and the
    physical half-range of each node."""
    torch.manual_seed(seed)
    config = ModelConfig(encoder_filters=(128, 64, 32, 16), latent_dim_main=32, latent_dim_hier=8)
    model = HierarchicalVAE(config, num_nodes, num_timesteps)
    channels, components = config.encoder_filters[0], model.flat_latent_dim
    spatial, _ = torch.linalg.qr(torch.randn(num_nodes, channels, dtype=torch.float64))
    init = LinearPathInit(spatial_basis=spatial, channel_scale=torch.rand(channels, dtype=torch.float64) + 0.5,
                          coefficient_mean=torch.zeros(channels * num_timesteps, dtype=torch.float64),
                          coefficient_basis=torch.linalg.qr(torch.randn(channels * num_timesteps, components,
                                                                        dtype=torch.float64))[0],
                          coefficient_scale=torch.ones(components, dtype=torch.float64))
    half_range = torch.rand(num_nodes, dtype=torch.float64) + 0.5
    model.initialise_linear_path(init, node_weights=half_range)
    with torch.no_grad():  # away from the silent PCA start, as after some training
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    return model, half_range


def time_steps(model: HierarchicalVAE, objective: Callable, batch, steps: int) -> Tuple[float, float, int, int]:
    """(seconds per step over `steps` after one warm-up step, loss of the first step, peak resident bytes,
    resident bytes before the first step)."""
    start = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    before = resident("VmRSS")
    peak_reset()
    seconds, first_loss = [], 0.0
    for step in range(steps + 1):
        torch.manual_seed(step)
        started = time.perf_counter()
        loss, _ = objective(model, batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
        if step == 0:
            first_loss = loss.item()
    peak = resident("VmHWM")
    del optimizer
    model.load_state_dict(start)
    return sum(seconds[1:]) / steps, first_loss, peak, before


def measure(num_nodes: int, num_timesteps: int, batch_size: int, steps: int) -> Dict[str, float]:
    model, half_range = build(num_nodes, num_timesteps)
    weights = physical_node_weights(half_range)
    to_physical = (torch.randn(num_nodes), (half_range / SCALED_LIMIT).float())
    train = TrainConfig(recon_weight=1e5, pod_projected_training=True)

    torch.manual_seed(1)
    fields = (torch.rand(batch_size, num_nodes, num_timesteps) * 2 - 1) * SCALED_LIMIT
    started = time.perf_counter()
    parts = [project_fields(model, fields[i:i + 1], weights, to_physical) for i in range(batch_size)]
    project_seconds = (time.perf_counter() - started) / batch_size
    coefficients, residual, norm_sq = (torch.cat(part) for part in zip(*parts))
    projection = ProjectedSweep(coefficients, residual, norm_sq, channel_gram(model, weights),
                                physical_per_weighted(weights, to_physical), num_nodes)
    index = torch.arange(batch_size)

    full_seconds, full_loss, full_peak, full_before = time_steps(model, VAEObjective(train, weights, to_physical),
                                                    (fields, index), steps)
    del fields
    projected_seconds, projected_loss, projected_peak, projected_before = time_steps(model, ProjectedVAEObjective(train, projection),
                                                                   (coefficients, index), steps)
    return {"full_seconds_per_case": full_seconds / batch_size, "projected_seconds_per_case": projected_seconds / batch_size,
            "full_peak_mib": full_peak / MIB, "projected_peak_mib": projected_peak / MIB,
            "full_step_mib": (full_peak - full_before) / MIB, "projected_step_mib": (projected_peak - projected_before) / MIB,
            "full_loss": full_loss, "projected_loss": projected_loss, "project_seconds_per_case": project_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shapes", nargs="+", default=["1024x40", "95008x200"], help="NODESxTIMESTEPS")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one VAE training step (forward, loss, backward, AdamW), batch {args.batch}, filters 128 64 32 16, "
          f"{args.threads} threads, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print("peak MiB: the process's resident peak during the steps; step MiB: its rise over the resident memory "
          "before them (model, optimiser and batch already there)")
    print(f"{'nodes x steps':<14}{'mode':<11}{'s/case':>9}{'peak MiB':>10}{'step MiB':>10}{'loss':>14}")
    for shape in args.shapes:
        num_nodes, num_timesteps = (int(part) for part in shape.split("x"))
        result = measure(num_nodes, num_timesteps, args.batch, args.steps)
        for mode in ("full", "projected"):
            print(f"{shape:<14}{mode:<11}{result[mode + '_seconds_per_case']:>9.4f}{result[mode + '_peak_mib']:>10.0f}"
                  f"{result[mode + '_step_mib']:>10.0f}{result[mode + '_loss']:>14.6g}")
        print(f"{shape:<14}{'ratio':<11}{result['full_seconds_per_case'] / result['projected_seconds_per_case']:>8.1f}x"
              f"{result['full_peak_mib'] / result['projected_peak_mib']:>9.1f}x"
              f"{result['full_step_mib'] / max(result['projected_step_mib'], 1e-3):>9.1f}x"
              f"{abs(result['projected_loss'] / result['full_loss'] - 1):>14.1e}  (full / projected; loss rel. diff)")
        print(f"{shape:<14}{'projecting':<11}{result['project_seconds_per_case']:>9.4f}  s per case, once per run")


if __name__ == "__main__":
    main()
