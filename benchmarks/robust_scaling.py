"""What `scaler minmax` and `scaler robust` do to held-out error, on a sweep as it is and on a copy where a
few training cases carry spikes (outliers: a block of nodes at a few timesteps pushed far above the
sweep's range, as a solver glitch or a bad export would). Held-out cases are never spiked.

For each scaler, on the held-out test cases of the benchmarks' split (sweep_runs.SPLIT_KEYS):
  * PCA reference: the tool's own NodeScaler fitted on the training cases; every case scaled and brought
    back (what the network can see and give back: the robust scaler clips), PCA (56 components) fitted
    on the training cases in physical units (as the physically weighted loss measures), applied to the
    held-out cases: mean relative L2 error against their unclipped truth;
  * with --epochs N > 0, the tool itself (N VAE epochs, --lc-epochs conditioner epochs): the report's
    held-out reconstruction and prediction errors.

    python benchmarks/robust_scaling.py --sweep ../shared/sweeps/impact-dev [--spiked 4] [--epochs 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import (condition_text, benchmark_split, open_sweep_folder, prediction_held_out,  # noqa: E402
                                   relative_errors,
                                   run_tool, table, vae_held_out)
from benchmarks.temporal_downsampling import PCA_COMPONENTS, pca_reconstruction  # noqa: E402
from modules.config.schema import DataConfig  # noqa: E402
from modules.data.scaling import NodeScaler  # noqa: E402

SPIKE_HEIGHT = 20.0
"""A spike's height in units of the sweep's whole value range."""
SPIKE_NODES = 0.05
"""Share of the nodes (one block) a spike covers, at SPIKE_STEPS timesteps."""
SPIKE_STEPS = 3


def spiked_copy(array: np.ndarray, train_idx: np.ndarray, count: int, path: Path) -> np.ndarray:
    rng = np.random.default_rng(13)
    spiked = np.array(array, dtype=np.float32)
    height = SPIKE_HEIGHT * float(array.max() - array.min())
    width = max(1, int(SPIKE_NODES * array.shape[2]))
    for case in rng.choice(train_idx, size=count, replace=False):
        start = int(rng.integers(0, array.shape[2] - width))
        steps = rng.choice(array.shape[1], size=SPIKE_STEPS, replace=False)
        spiked[case, steps, start:start + width] += height
    np.save(path, spiked)
    return spiked


def scaled_pca_error(array: np.ndarray, truth: np.ndarray, train_idx, test_idx, scaler_name: str) -> float:
    data = DataConfig(num_cases=array.shape[0], num_timesteps=array.shape[1], num_nodes=array.shape[2],
                      scaler=scaler_name)
    scaler = NodeScaler()
    if scaler_name == "robust":
        scaler.fit_robust(array, train_idx, data)
    else:
        scaler.fit(array, train_idx, data)
    seen = scaler.inverse(scaler.transform(np.asarray(array, dtype=np.float64)))
    recon = pca_reconstruction(seen[train_idx], seen[test_idx], PCA_COMPONENTS)
    return float(relative_errors(truth[test_idx], recon).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="a development sweep folder, or 'demo'")
    parser.add_argument("--spiked", type=int, default=4, help="training cases given spikes in the copy")
    parser.add_argument("--epochs", type=int, default=0, help="VAE epochs of the tool's runs (0: PCA only)")
    parser.add_argument("--lc-epochs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="robust_"))
    sweep = open_sweep_folder(args.sweep, work)
    clean = np.load(sweep.dataset)
    split = benchmark_split(clean.shape[0])
    train_idx, test_idx = split.train, split.test
    spiked_path = work / f"{sweep.name}_spiked.npy"
    variants = {"as is": (clean, sweep.dataset),
                f"{args.spiked} training cases spiked": (spiked_copy(clean, train_idx, args.spiked, spiked_path),
                                                         spiked_path)}
    rows = [["sweep", "scaler", f"PCA {PCA_COMPONENTS} test", "tool VAE test", "tool prediction test", "tool s",
             "peak MiB"]]
    for variant, (array, path) in variants.items():
        for scaler_name in ("minmax", "robust"):
            reference = scaled_pca_error(array, clean, train_idx, test_idx, scaler_name)
            tool = ["-", "-", "-", "-"]
            if args.epochs > 0:
                name = f"{variant.split()[0]}_{scaler_name}"
                report = run_tool(work, name, condition_text(sweep, dataset=path, keys={"scaler": scaler_name}),
                                  "--epochs", str(args.epochs), "--lc-epochs", str(args.lc_epochs))
                tool = [f"{vae_held_out(report):.2%}", f"{prediction_held_out(report):.2%}", f"{report['seconds']:.0f}",
                        f"{report['peak_mib']:.0f}"]
            rows.append([variant, scaler_name, f"{reference:.2%}"] + tool)
    print(f"{sweep.name}: {clean.shape}; held-out = the tool's {len(test_idx)} test cases, never spiked; "
          f"spikes: +{SPIKE_HEIGHT:g} x the sweep's range on {SPIKE_NODES:.0%} of the nodes at {SPIKE_STEPS} "
          f"timesteps; mean relative L2 error per held-out case")
    print(table(rows))


if __name__ == "__main__":
    main()
