"""What only a GPU can show, in one script that a CUDA machine runs in under 10 minutes.

    python benchmarks/gpu_check.py [--out /tmp/gpu_check] [--epochs 200]

1. VAE training step, fp32 against bf16 autocast, on the demo's shape and on the seed's (95,008 nodes x 200
   timesteps: the VAE trains on at most 256 spatial-mode coefficients, so only the projection pass sees the
   nodes): seconds per step, model FLOPs utilisation (torch's FlopCounterMode over one step / step time /
   the card's bf16 or fp32 dense peak) and peak GPU memory; plus one projection pass of 4 cases at 95k nodes.
2. The whole main command on the demo with --device=cuda --load_all=1 (the window kept on the GPU), with
   `amp 0` and `amp 1`: held-out (test) errors from report.json, so bf16 training is judged by fp32 numbers
   (validation always runs in fp32).
3. The same command through launch_ddp.py with one process: DDP over NCCL.

Without a CUDA device every part says so and is skipped (exit code 0): the script is tested that way on CPU
(tests/test_gpu_check.py). It has not yet run on a GPU (README, GPU check).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules.config.schema import ModelConfig  # noqa: E402
from modules.models.vae import HierarchicalVAE  # noqa: E402

# Dense tensor-core peaks from the vendors' data sheets, TFLOP/s: (bf16, fp32 via TF32).
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0),
               "A10": (125.0, 62.5), "L4": (121.0, 60.0), "V100": (125.0, 15.7)}
SHAPES = {"demo": (1024, 40, 66), "seed": (95_008, 200, 256)}  # nodes, timesteps, spatial modes
DEMO_TRAINING = ["--preset=1", "--plot=2", "--lc_only=0", "--size=small", "--load_all=1", "--device=cuda", "--quiet"]


def card_peak(name: str) -> Optional[Tuple[float, float]]:
    """(bf16, fp32) dense peak TFLOP/s of a card from its torch name, None when the table does not know it."""
    for model, peak in PEAK_TFLOPS.items():
        if model.lower() in name.lower():
            return peak
    return None


def utilisation(flops_per_step: float, seconds_per_step: float, peak_tflops: float) -> float:
    """Achieved over peak: flops / s / (peak x 1e12)."""
    return flops_per_step / max(seconds_per_step, 1e-12) / (peak_tflops * 1e12)


def step_benchmark(shape: str, dtype: Optional[torch.dtype], steps: int = 20, batch: int = 16,
                   device: str = "cuda") -> Dict[str, float]:
    """Seconds per AdamW step of the VAE on coefficients, its FLOPs and the peak GPU memory (0 off CUDA)."""
    from torch.utils.flop_counter import FlopCounterMode

    nodes, timesteps, modes = SHAPES[shape]
    torch.manual_seed(0)
    model = HierarchicalVAE(ModelConfig(encoder_filters=(128, 64, 32, 16), latent_dim_main=16, latent_dim_hier=4),
                            nodes, timesteps, modes, design_features=5).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    coefficients = torch.randn(batch, modes, timesteps, device=device)
    design = torch.randn(batch, 5, device=device)
    chosen = torch.rand(batch, timesteps, device=device).argsort(dim=1)[:, :10]
    cuda = device.startswith("cuda")

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            output = model(coefficients, projected=True, design=design, timesteps=chosen)
            target = coefficients.gather(2, chosen[:, None, :].expand(-1, modes, -1))
            loss = (output.recon.float() - target).pow(2).mean() + (output.design_recon.float() - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return {"seconds_per_step": (time.perf_counter() - started) / steps, "flops": float(counter.get_total_flops()),
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else 0.0}


def projection_seconds(cases: int = 4) -> float:
    """One projection of `cases` seed-size cases on 256 modes (what the run does once per case)."""
    nodes, timesteps, modes = SHAPES["seed"]
    model = HierarchicalVAE(ModelConfig(), nodes, timesteps, modes).cuda()
    fields = torch.randn(cases, nodes, timesteps, device="cuda")
    model.basis.project(fields)
    torch.cuda.synchronize()
    started = time.perf_counter()
    model.basis.project(fields)
    torch.cuda.synchronize()
    return time.perf_counter() - started


def demo_run(out: Path, amp: int, epochs: int, launcher: bool) -> Tuple[float, Dict[str, float]]:
    """The main command on the demo; (wall seconds, pooled test errors of the report)."""
    condition = out / f"condition_amp{amp}.txt"
    text = (ROOT / "input_data" / "condition.txt").read_text()
    condition.write_text(text + f"\namp\t{amp}\nTraining_epochs\t{epochs}\n")
    run_dir = out / f"demo_amp{amp}{'_ddp' if launcher else ''}"
    flags = DEMO_TRAINING + ["--condition", str(condition), "--out", str(run_dir), "--overwrite"]
    command = ([sys.executable, "launch_ddp.py", "--nproc", "1", "--"] + flags if launcher
               else [sys.executable, "SimulGen-VAE.py"] + flags)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    report = json.loads((run_dir / "report.json").read_text())
    split = "test" if "test" in report["vae"]["relative_l2"]["vae"] else "val"
    return seconds, {"reconstruct": report["vae"]["relative_l2"]["vae"][split]["pooled"],
                     "predict": report["conditioner"]["prediction_relative_l2"]["conditioner"][split]["pooled"]}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"), help="folder for the demo runs")
    parser.add_argument("--epochs", type=int, default=200, help="VAE epochs of each demo run (200)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: step timing, utilisation, GPU memory, the demo runs on cuda and NCCL DDP are "
              "skipped; run this script on a machine with a GPU")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = card_peak(name)
    print(f"card: {name}; dense peak bf16 / fp32(TF32) "
          + ("unknown to the table" if peak is None else f"{peak[0]:.0f} / {peak[1]:.0f} TFLOP/s"))
    torch.backends.cuda.matmul.allow_tf32 = True
    for shape in SHAPES:
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            result = step_benchmark(shape, dtype)
            mfu = "" if peak is None else \
                f", utilisation {utilisation(result['flops'], result['seconds_per_step'], peak[dtype is None]):.1%}"
            print(f"VAE step, {shape} shape, {label}: {result['seconds_per_step'] * 1000:.1f} ms, "
                  f"{result['flops'] / 1e9:.1f} GFLOP{mfu}, peak GPU memory {result['peak_gib']:.2f} GiB")
    print(f"projection of 4 seed-size cases (95,008 x 200) on 256 modes: {projection_seconds():.3f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    for amp in (0, 1):
        seconds, errors = demo_run(args.out, amp, args.epochs, launcher=False)
        print(f"demo, --load_all=1 on cuda, amp {amp}: {seconds:.0f} s; test reconstruct {errors['reconstruct']:.4f}, "
              f"predict {errors['predict']:.4f}")
    seconds, errors = demo_run(args.out, 1, args.epochs, launcher=True)
    print(f"demo through launch_ddp.py, 1 process (NCCL): {seconds:.0f} s; test predict {errors['predict']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
