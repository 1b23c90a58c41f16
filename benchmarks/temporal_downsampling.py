"""What keeping Dim2_red of the timesteps costs in held-out error against the full time axis, for
Dim2_red_mode first and spread (and, as a reference only, a dynamics-weighted choice that the tool does
not offer unless it helps).

For each choice of kept steps, on the held-out test cases of the benchmarks' split (sweep_runs.SPLIT_KEYS):
  * interpolation only: the true kept frames, linearly interpolated back to every stored step (held
    constant past the last kept one): the error the choice of steps costs by itself;
  * PCA (56 components, the demo VAE's latent size) fitted on the training cases' kept frames,
    reconstructing the held-out cases' kept frames: error on the kept frames, and after interpolating
    back to every step;
  * with --epochs N > 0, the tool itself: train with that Dim2_red / Dim2_red_mode (N VAE epochs, 1
    conditioner epoch), `reconstruct` every case, interpolate back: the same two errors for the model the
    tool has now.

    python benchmarks/temporal_downsampling.py --sweep ../shared/sweeps/front-dev --keep 10 [--epochs 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sweep_runs import (condition_text, open_sweep_folder, reconstruct, relative_errors, run_tool,  # noqa: E402
                                   benchmark_split, table, vae_held_out)
from modules.config.time_window import kept_timesteps  # noqa: E402

PCA_COMPONENTS = 56


def dynamics_weighted(train: np.ndarray, keep: int) -> List[int]:
    """Steps at equal shares of the cumulative mean frame-to-frame change of the training cases (first and
    last included): more steps where the field moves fast."""
    change = np.sqrt(((np.diff(train, axis=1)) ** 2).mean(axis=(0, 2)))
    arc = np.concatenate([[0.0], np.cumsum(change)])
    targets = np.linspace(0.0, arc[-1], keep)
    chosen = sorted({int(np.argmin(np.abs(arc - target))) for target in targets})
    missing = [step for step in range(train.shape[1]) if step not in chosen]
    while len(chosen) < keep:  # ties on a flat stretch: fill with the steps furthest from the chosen ones
        gaps = [min(abs(step - c) for c in chosen) for step in missing]
        chosen = sorted(chosen + [missing.pop(int(np.argmax(gaps)))])
    return chosen


def back_to_every_step(frames: np.ndarray, kept: List[int], num_steps: int) -> np.ndarray:
    """[cases, len(kept), nodes] -> [cases, num_steps, nodes], linear in time, constant past the ends."""
    steps = np.arange(num_steps)
    position = np.interp(steps, kept, np.arange(len(kept)))
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(kept) - 1)
    weight = (position - lower)[None, :, None]
    return frames[:, lower] * (1 - weight) + frames[:, upper] * weight


def pca_reconstruction(train: np.ndarray, held_out: np.ndarray, components: int) -> np.ndarray:
    flat_train = train.reshape(len(train), -1).astype(np.float64)
    mean = flat_train.mean(axis=0)
    _, _, basis = np.linalg.svd(flat_train - mean, full_matrices=False)
    basis = basis[:components]
    flat = held_out.reshape(len(held_out), -1) - mean
    return ((flat @ basis.T) @ basis + mean).reshape(held_out.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="a development sweep folder, or 'demo'")
    parser.add_argument("--keep", type=int, default=10, help="Dim2_red: timesteps kept")
    parser.add_argument("--epochs", type=int, default=0, help="VAE epochs of the tool's runs (0: PCA only)")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="temporal_"))
    sweep = open_sweep_folder(args.sweep, work)
    array = np.load(sweep.dataset, mmap_mode="r")
    cases, steps = array.shape[:2]
    split = benchmark_split(cases)
    train_idx, test_idx = split.train, split.test
    train, test = np.asarray(array[train_idx], np.float64), np.asarray(array[test_idx], np.float64)
    choices: Dict[str, List[int]] = {
        "all steps": list(range(steps)),
        "first": list(kept_timesteps(steps, args.keep, "first")),
        "spread": list(kept_timesteps(steps, args.keep, "spread")),
        "dynamics-weighted (reference)": dynamics_weighted(train, args.keep),
    }
    rows = [["kept steps", "steps", "interp. only", f"PCA {PCA_COMPONENTS} kept", f"PCA {PCA_COMPONENTS} all",
             "tool kept", "tool all", "tool s", "peak MiB"]]
    for name, kept in choices.items():
        interpolated = relative_errors(test, back_to_every_step(test[:, kept], kept, steps)).mean()
        pca = pca_reconstruction(train[:, kept], test[:, kept], PCA_COMPONENTS)
        pca_kept = relative_errors(test[:, kept], pca).mean()
        pca_all = relative_errors(test, back_to_every_step(pca, kept, steps)).mean()
        tool = ["-", "-", "-", "-"]
        if args.epochs > 0 and not name.endswith("(reference)"):
            keys = {} if name == "all steps" else {"Dim2_red": str(args.keep), "Dim2_red_mode": name}
            run = name.split()[0]
            report = run_tool(work, run, condition_text(sweep, keys=keys), "--epochs", str(args.epochs),
                              "--lc-epochs", "1")
            recon = reconstruct(work, run, sweep.dataset)[test_idx]
            tool = [f"{vae_held_out(report):.2%}",
                    f"{relative_errors(test, back_to_every_step(recon.astype(np.float64), kept, steps)).mean():.2%}",
                    f"{report['seconds']:.0f}",
                    "-" if report.get("peak_mib") is None else f"{report['peak_mib']:.0f}"]
        shown = ", ".join(map(str, kept)) if len(kept) <= 12 else f"{len(kept)} steps"
        rows.append([name, shown, f"{interpolated:.2%}", f"{pca_kept:.2%}", f"{pca_all:.2%}"] + tool)
    print(f"{sweep.name}: {cases} cases x {steps} timesteps x {array.shape[2]} nodes; {len(test_idx)} held-out "
          f"cases; Dim2_red {args.keep}; mean relative L2 error per held-out case ('all': interpolated back to every "
          f"stored step, constant past the last kept one)")
    print(table(rows))


if __name__ == "__main__":
    main()
