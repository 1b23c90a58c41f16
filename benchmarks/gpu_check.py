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
(tests/test_gpu_check.py). Its run on an H200 (2026-12-04) is in the README (GPU check).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modules.config.legacy_files import with_keys  # noqa: E402
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


def demo_condition(text: str, amp: int, members: int) -> str:
    """The shipped condition.txt with bf16 autocast on or off, `members` conditioners and no time budget (the
    epochs come from the command line), so that the runs compared differ in `amp` alone."""
    return with_keys(text, {"amp": str(amp), "conditioner_ensemble": str(members), "training_minutes": "0"})


def demo_run(out: Path, amp: int, epochs: Tuple[int, int], members: int, launcher: bool,
             timeout: float) -> Tuple[float, Dict[str, float]]:
    """The main command on the demo with (VAE, conditioner) epochs; (wall seconds, pooled test errors of the
    report)."""
    condition = out / f"condition_amp{amp}.txt"
    condition.write_text(demo_condition((ROOT / "input_data" / "condition.txt").read_text(), amp, members))
    run_dir = out / f"demo_amp{amp}{'_ddp' if launcher else ''}"
    flags = DEMO_TRAINING + [f"--epochs={epochs[0]}", f"--lc-epochs={epochs[1]}", "--condition", str(condition),
                             "--out", str(run_dir), "--overwrite"]
    command = ([sys.executable, "launch_ddp.py", "--nproc", "1", "--"] + flags if launcher
               else [sys.executable, "SimulGen-VAE.py"] + flags)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    report = json.loads((run_dir / "report.json").read_text())
    split = "test" if "test" in report["vae"]["relative_l2"]["vae"] else "val"
    return seconds, {"reconstruct": report["vae"]["relative_l2"]["vae"][split]["pooled"],
                     "predict": report["conditioner"]["prediction_relative_l2"]["conditioner"][split]["pooled"],
                     "peak_gib": _peak_gpu_memory(run_dir)}


def _peak_gpu_memory(run_dir: Path) -> float:
    """The largest peak GPU memory (GiB) the run's stage profiles logged in train_log.txt; nan when none did."""
    log = (run_dir / "train_log.txt").read_text() if (run_dir / "train_log.txt").is_file() else ""
    found = [float(value) / 1024 for value in re.findall(r"peak GPU memory ([0-9.]+) MiB", log)]
    return max(found) if found else float("nan")


def part(title: str, work: Callable[[], str]) -> bool:
    """Run one part of the check and print its line; a failure is printed and the next part still runs."""
    started = time.perf_counter()
    try:
        line = work()
    except Exception as error:  # noqa: BLE001 - one part's failure must not hide the others' figures
        print(f"{title}: FAILED after {time.perf_counter() - started:.0f} s: {type(error).__name__}: {error}",
              flush=True)
        return False
    print(f"{title}: {line}", flush=True)
    return True


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"), help="folder for the demo runs")
    parser.add_argument("--epochs", type=int, default=200, help="VAE epochs of each demo run (200)")
    parser.add_argument("--lc-epochs", type=int, default=100, help="conditioner epochs of each demo run (100)")
    parser.add_argument("--members", type=int, default=1, help="conditioners of each demo run (1)")
    parser.add_argument("--run-timeout", type=float, default=240.0, help="seconds allowed to each demo run (240)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: step timing, utilisation, GPU memory, the demo runs on cuda and NCCL DDP are "
              "skipped; run this script on a machine with a GPU")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = card_peak(name)
    print(f"card: {name}; torch {torch.__version__}; dense peak bf16 / fp32(TF32) "
          + ("unknown to the table" if peak is None else f"{peak[0]:.0f} / {peak[1]:.0f} TFLOP/s"), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    passed = True
    for shape in SHAPES:
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            def step_line(shape=shape, dtype=dtype) -> str:
                result = step_benchmark(shape, dtype)
                mfu = "" if peak is None else \
                    f", utilisation {utilisation(result['flops'], result['seconds_per_step'], peak[dtype is None]):.2%}"
                return (f"{result['seconds_per_step'] * 1000:.2f} ms per step of 16 cases x 10 timesteps, "
                        f"{result['flops'] / 1e9:.2f} GFLOP{mfu}, peak GPU memory {result['peak_gib']:.2f} GiB")
            passed &= part(f"VAE step, {shape} shape, {label}", step_line)
    passed &= part("projection of 4 seed-size cases (95,008 x 200) on 256 modes",
                   lambda: f"{projection_seconds():.3f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = (args.epochs, args.lc_epochs)
    for amp in (0, 1):
        def demo_line(amp=amp) -> str:
            seconds, errors = demo_run(args.out, amp, epochs, args.members, False, args.run_timeout)
            return (f"{seconds:.0f} s ({args.epochs} VAE + {args.members} x {args.lc_epochs} conditioner epochs); "
                    f"test reconstruct {errors['reconstruct']:.4f}, predict {errors['predict']:.4f}; "
                    f"peak GPU memory {errors['peak_gib']:.2f} GiB")
        passed &= part(f"demo, --load_all=1 on cuda, amp {amp}", demo_line)

    def ddp_line() -> str:
        seconds, errors = demo_run(args.out, 1, (max(1, args.epochs // 10), max(1, args.lc_epochs // 10)),
                                   1, True, args.run_timeout)
        return f"{seconds:.0f} s (a tenth of the epochs); test predict {errors['predict']:.4f}"
    passed &= part("demo through launch_ddp.py, 1 process (NCCL)", ddp_line)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
