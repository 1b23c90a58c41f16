"""Held-out prediction error of the CNN conditioner on a sweep's design images with and without image
augmentation (pixel noise, slight blur, both).

With --reference (fast): the tool's CNN conditioner, training loop and augmentation, trained to predict
each case's 32 leading PCA coefficients of the training fields (standardised) from its image; the held-out
error is that of the fields rebuilt from the predicted coefficients. Without it: the tool itself, training
the VAE once (--epochs VAE epochs, with the image designs), then the conditioner alone (--lc_only=1) on it
for each setting, --lc-epochs epochs each, the same seed; the report's held-out prediction error
(conditioner + decoder). Mean relative L2 error per held-out case either way. (A run of the tool on image
designs spends most of its time in the report's POD + Gaussian-process baseline on block-averaged pixels:
over 20 minutes on impact-dev on the loaded 2-core box.)

    python benchmarks/image_augmentation.py --sweep ../shared/sweeps/impact-dev --reference [--lc-epochs 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import (condition_text, benchmark_split, open_sweep_folder, prediction_held_out,  # noqa: E402
                                   run_tool, table)

SETTINGS = {
    "off": {},
    "noise (p 0.5, std 0.05)": {"aug_image_noise_probability": "0.5", "aug_image_noise_std": "0.05"},
    "blur (p 0.5, sigma <= 0.6 px)": {"aug_image_blur_probability": "0.5", "aug_image_blur_sigma": "0.6"},
    "noise + blur": {"aug_image_noise_probability": "0.5", "aug_image_noise_std": "0.05",
                     "aug_image_blur_probability": "0.5", "aug_image_blur_sigma": "0.6"},
}


def reference_errors(sweep, image_size: int, epochs: int) -> dict:
    """{setting: held-out error} of the CNN predicting PCA coefficients (see the module's docstring)."""
    import io

    import numpy as np
    import torch

    from benchmarks.sweep_runs import relative_errors
    from modules.config.schema import AugmentationConfig, ConditionerConfig
    from modules.data.design_images import load_images
    from modules.data.designs import DesignDataset, scaled_inputs
    from modules.data.input_scaler import InputScaler
    from modules.models.conditioners import build_conditioner
    from modules.runtime.distributed import Runtime
    from modules.training.augmentation import DesignAugmenter
    from modules.training.checkpointing import Checkpointer, CheckpointPaths
    from modules.training.loop import LoopSettings, Trainer
    from modules.training.objectives import ConditionerObjective
    from modules.training.run_log import RunLog

    fields = np.load(sweep.dataset).astype(np.float64)
    cases = len(fields)
    split = benchmark_split(cases)
    train_idx, test_idx = split.train, split.test
    flat = fields.reshape(cases, -1)
    mean = flat[train_idx].mean(axis=0)
    _, _, basis = np.linalg.svd(flat[train_idx] - mean, full_matrices=False)
    basis = basis[:32]
    coefficients = (flat - mean) @ basis.T
    spread = coefficients[train_idx].std(axis=0)
    targets = torch.as_tensor(coefficients / spread, dtype=torch.float32)
    designs = load_images(sweep.images, cases, image_size)
    inputs = scaled_inputs(designs, InputScaler().fit(designs, train_idx))
    errors = {}
    for name, keys in SETTINGS.items():
        augmentation = AugmentationConfig(**{key.replace("aug_", ""): float(value) for key, value in keys.items()})
        torch.manual_seed(0)
        model = build_conditioner(ConditionerConfig(input_type="image", architecture="cnn", image_size=image_size),
                                  32, 1, 0)
        settings = LoopSettings(name="conditioner", epochs=epochs, batch_size=16, learning_rate=2e-3,
                                weight_decay=1e-4, grad_clip=5.0, lr_schedule="cosine", min_lr_fraction=0.05,
                                early_stopping_patience=0, checkpoint_every=epochs, seed=0)
        folder = Path(tempfile.mkdtemp(prefix="image_aug_ref_"))
        trainer = Trainer(model, ConditionerObjective(None, DesignAugmenter(augmentation)), settings,
                          Runtime(torch.device("cpu")), RunLog(None, None, show_progress=False, stream=io.StringIO()),
                          Checkpointer(CheckpointPaths(folder / "last.pt", folder / "best.pt"),
                                       Runtime(torch.device("cpu")), "conditioner", {}, {}))
        # The best epoch is picked on the validation cases; the error is measured on the test cases.
        trainer.fit(DesignDataset(inputs, targets, train_idx), DesignDataset(inputs, targets, split.validation))
        model.eval()
        with torch.no_grad():
            predicted = model(inputs[test_idx]).flat()[:, :32].numpy() * spread
        rebuilt = (predicted @ basis + mean).reshape(fields[test_idx].shape)
        errors[name] = float(relative_errors(fields[test_idx], rebuilt).mean())
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--epochs", type=int, default=1, help="VAE epochs (once)")
    parser.add_argument("--lc-epochs", type=int, default=40, help="conditioner epochs of each setting")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--reference", action="store_true", help="the CNN on PCA coefficients only (fast)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="image_aug_"))
    sweep = open_sweep_folder(args.sweep, work)
    if args.reference:
        rows = [["augmentation", "held-out error (CNN -> 32 PCA coefficients)"]]
        rows += [[name, f"{error:.2%}"] for name, error in reference_errors(sweep, args.image_size,
                                                                              args.lc_epochs).items()]
        print(f"{sweep.name}: CNN conditioner on {args.image_size} x {args.image_size} design images, "
              f"{args.lc_epochs} epochs, predicting 32 PCA coefficients; mean relative L2 error per held-out case")
        print(table(rows))
        return
    # Augmentation applies to a conditioner trained on the VAE's latents (end-to-end training does not augment).
    base = {"conditioner_type": "cnn", "image_size": str(args.image_size), "use_e2e_training": "0"}
    run_tool(work, "vae", condition_text(sweep, keys=base, images=True), "--epochs", str(args.epochs),
             "--lc-epochs", "1")
    vae = work / "vae" / "out" / "SimulGen-VAE"
    rows = [["augmentation", "held-out prediction error", "conditioner s"]]
    for index, (name, keys) in enumerate(SETTINGS.items()):
        condition = condition_text(sweep, keys={**base, **keys, "e2e_vae_model_path": str(vae)}, images=True)
        report = run_tool(work, f"lc_{index}", condition, "--lc_only=1", "--lc-epochs", str(args.lc_epochs))
        rows.append([name, f"{prediction_held_out(report):.2%}", f"{report['conditioner']['training']['seconds']:.0f}"])
    print(f"{sweep.name}: CNN conditioner on {args.image_size} x {args.image_size} design images, {args.lc_epochs} "
          f"epochs, on a VAE of {args.epochs} epoch(s); mean relative L2 error per held-out case")
    print(table(rows))


if __name__ == "__main__":
    main()
