"""Held-out prediction error of the CNN conditioner on a sweep's design images with and without image
augmentation (pixel noise, slight blur, both).

Trains the VAE once (--epochs VAE epochs, with the image designs), then the conditioner alone
(--lc_only=1) on it for each setting, --lc-epochs epochs each, the same seed; prints the report's held-out
prediction error (conditioner + decoder, mean relative L2 per held-out case) and time.

    python benchmarks/image_augmentation.py --sweep ../shared/sweeps/impact-dev [--epochs 1] [--lc-epochs 40]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import condition_text, open_sweep_folder, prediction_val, run_tool, table  # noqa: E402

SETTINGS = {
    "off": {},
    "noise (p 0.5, std 0.05)": {"aug_image_noise_probability": "0.5", "aug_image_noise_std": "0.05"},
    "blur (p 0.5, sigma <= 0.6 px)": {"aug_image_blur_probability": "0.5", "aug_image_blur_sigma": "0.6"},
    "noise + blur": {"aug_image_noise_probability": "0.5", "aug_image_noise_std": "0.05",
                     "aug_image_blur_probability": "0.5", "aug_image_blur_sigma": "0.6"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--epochs", type=int, default=1, help="VAE epochs (once)")
    parser.add_argument("--lc-epochs", type=int, default=40, help="conditioner epochs of each setting")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="image_aug_"))
    sweep = open_sweep_folder(args.sweep, work)
    base = {"conditioner_type": "cnn", "image_size": str(args.image_size)}
    run_tool(work, "vae", condition_text(sweep, keys=base, images=True), "--epochs", str(args.epochs),
             "--lc-epochs", "1")
    vae = work / "vae" / "out" / "SimulGen-VAE"
    rows = [["augmentation", "held-out prediction error", "conditioner s"]]
    for index, (name, keys) in enumerate(SETTINGS.items()):
        condition = condition_text(sweep, keys={**base, **keys, "e2e_vae_model_path": str(vae)}, images=True)
        report = run_tool(work, f"lc_{index}", condition, "--lc_only=1", "--lc-epochs", str(args.lc_epochs))
        rows.append([name, f"{prediction_val(report):.2%}", f"{report['conditioner']['training']['seconds']:.0f}"])
    print(f"{sweep.name}: CNN conditioner on {args.image_size} x {args.image_size} design images, {args.lc_epochs} "
          f"epochs, on a VAE of {args.epochs} epoch(s); mean relative L2 error per held-out case")
    print(table(rows))


if __name__ == "__main__":
    main()
