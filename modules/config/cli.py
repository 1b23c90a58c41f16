"""Command-line interface: the legacy training flags plus `predict` and `reconstruct`.

Existing scripts keep working unchanged:
    python SimulGen-VAE.py --preset=1 --plot=2 --lc_only=0 --size=small --load_all=1 [--use_ddp]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from modules.config.schema import RunConfig
from modules.config.legacy_files import load_run_config

SUBCOMMANDS = ("train", "predict", "reconstruct")

TRAIN_EXAMPLES = """\
examples:
  # the built-in demo (a transient heat-conduction sweep), plots saved as PNG
  python SimulGen-VAE.py --preset=1 --plot=1 --lc_only=0 --size=small --load_all=1

  # your own sweep: point at its condition.txt, write to a new folder
  python SimulGen-VAE.py --condition=my_case/condition.txt --out=runs/crash_v1 --plot=1

  # continue an interrupted run where it stopped
  python SimulGen-VAE.py --out=runs/crash_v1 --resume

  # only retrain the latent conditioner on the saved VAE
  python SimulGen-VAE.py --lc_only=1 --out=runs/crash_v1 --overwrite

  # several GPUs (see launch_ddp.py --help)
  python launch_ddp.py --nproc 4 -- --preset=1 --plot=2

other commands:
  python SimulGen-VAE.py predict --help       fields for new designs from a trained model
  python SimulGen-VAE.py reconstruct --help   run a trained VAE on any dataset file
"""


def _zero_one(text: str) -> int:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got '{text}'")
    return int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 or a positive number of minutes, got {value}")
    return value


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="SimulGen-VAE.py",
        description="Train a hierarchical VAE on a sweep of transient simulations, then a latent conditioner "
                    "that maps designs (CSV parameters or images) to it. Settings come from preset.txt and "
                    "input_data/condition.txt; flags below override them.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    legacy = parser.add_argument_group("legacy flags (same meaning as before)")
    legacy.add_argument("--preset", type=positive_int, default=1,
                        help="which preset of preset.txt to use (1 = the first block of four lines)")
    legacy.add_argument("--plot", type=int, choices=(0, 1, 2), default=2,
                        help="0 show plots in windows, 1 save PNGs under OUT/plots, 2 no plots (default 2)")
    legacy.add_argument("--lc_only", type=_zero_one, default=0,
                        help="1 = train only the latent conditioner on the VAE saved in OUT (e2e_vae_model_path)")
    legacy.add_argument("--size", choices=("small", "large"), default="small",
                        help="small: one convolution per block; large: two")
    legacy.add_argument("--load_all", type=_zero_one, default=1,
                        help="1 keeps the sweep in memory; 0 streams cases from the memory-mapped file")
    legacy.add_argument("--use_ddp", action="store_true",
                        help="DistributedDataParallel; start with launch_ddp.py or torchrun")
    files = parser.add_argument_group("files")
    files.add_argument("--condition", type=Path, default=Path("input_data/condition.txt"),
                       help="condition.txt to read (default input_data/condition.txt)")
    files.add_argument("--preset-file", type=Path, default=Path("preset.txt"), help="preset.txt to read")
    files.add_argument("--out", type=Path, default=Path("model_save"),
                       help="output folder for models, latents, report, logs and plots (default model_save)")
    files.add_argument("--resume", action="store_true",
                       help="continue the run in OUT from its last checkpoint")
    files.add_argument("--overwrite", action="store_true",
                       help="allow replacing the results of a previous run in OUT (otherwise refused)")
    overrides = parser.add_argument_group("overrides of condition.txt")
    overrides.add_argument("--epochs", type=positive_int, help="VAE epochs (Training_epochs)")
    overrides.add_argument("--batch-size", type=positive_int, help="VAE batch size (Batch_size)")
    overrides.add_argument("--lr", type=_positive_float, help="VAE learning rate (LearningR)")
    overrides.add_argument("--lc-epochs", type=positive_int, help="conditioner epochs (n_epoch)")
    overrides.add_argument("--training-minutes", type=_non_negative_float,
                           help="time budget of the VAE and conditioner training (training_minutes; 0 = none)")
    overrides.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    overrides.add_argument("--seed", type=int, help="seed of weights, sampling and shuffling")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (log lines only)")
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="SimulGen-VAE.py predict",
        description="Predict the full transient field [designs, timesteps, nodes] of new designs with a trained "
                    "model (VAE + latent conditioner), in physical units.",
        epilog="examples:\n"
               "  python SimulGen-VAE.py predict --model model_save --params designs.csv --out pred.npy\n"
               "  python SimulGen-VAE.py predict --model model_save --images new_designs/ --out pred.npy --samples 20\n"
               "  python SimulGen-VAE.py predict --model model_save --params designs.csv --out pred.npy --vtu vtu/\n",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", type=Path, default=Path("model_save"), help="folder of a trained run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--params", type=Path, help="CSV of design parameters, one row per design")
    source.add_argument("--images", type=Path, help="folder of design images (natural sort order)")
    parser.add_argument("--out", type=Path, required=True, help="output .npy (float32 [designs, timesteps, nodes])")
    parser.add_argument("--samples", type=int, default=0,
                        help="also draw K decoder samples and write their mean and standard deviation")
    parser.add_argument("--vtu", type=Path, help="also write each prediction as a ParaView time series here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="designs per forward pass")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def build_reconstruct_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="SimulGen-VAE.py reconstruct",
        description="Run a trained VAE (encode, then decode) on a dataset file and write the reconstruction in "
                    "physical units, same shape as the model's window of the input.",
        epilog="example:\n  python SimulGen-VAE.py reconstruct --model model_save --data input_data/dataset1.npy "
               "--out recon.npy\n  python SimulGen-VAE.py reconstruct --model model_save --data fields.npy --out recon.npy "
               "--designs designs.csv\n", formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", type=Path, default=Path("model_save"), help="folder of a trained run")
    parser.add_argument("--data", type=Path, required=True, help="dataset file (.npy, .npz or legacy .pickle)")
    parser.add_argument("--out", type=Path, required=True, help="output .npy")
    parser.add_argument("--designs", type=Path,
                        help="also write a CSV of the design parameters whose prediction matches each field best "
                             "(inverse design; needs a conditioner trained on a parameter table)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="cases per forward pass")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --designs files")
    return parser


def split_command(argv: Sequence[str]) -> Tuple[str, List[str]]:
    """('train' | 'predict' | 'reconstruct', remaining args); no subcommand means train."""
    if argv and argv[0] in SUBCOMMANDS:
        return argv[0], list(argv[1:])
    return "train", list(argv)


def parse_command(argv: Sequence[str]) -> Tuple[str, argparse.Namespace]:
    command, rest = split_command(argv)
    parser = {"train": build_train_parser, "predict": build_predict_parser,
              "reconstruct": build_reconstruct_parser}[command]()
    args = parser.parse_args(rest)
    if command == "train" and args.resume and args.overwrite:
        parser.error("--resume continues the run in --out while --overwrite starts it afresh; choose one")
    if command == "predict" and args.samples < 0:
        parser.error("--samples must be 0 or more")
    return command, args


def train_config_from_args(args: argparse.Namespace) -> Tuple[RunConfig, List[str]]:
    """Defaults < preset.txt/condition.txt < these flags."""
    cli_values: Dict[str, Tuple[str, Any]] = {}
    optional = {
        "epochs": ("train.epochs", "--epochs"), "batch_size": ("train.batch_size", "--batch-size"),
        "lr": ("train.learning_rate", "--lr"), "device": ("train.device", "--device"),
        "seed": ("train.seed", "--seed"), "lc_epochs": ("conditioner.epochs", "--lc-epochs"),
        "training_minutes": ("train.training_minutes", "--training-minutes"),
    }
    for attribute, (field_path, flag) in optional.items():
        value: Optional[Any] = getattr(args, attribute)
        if value is not None:
            cli_values[field_path] = (flag, value)
    cli_values["model.large"] = ("--size", args.size == "large")
    cli_values["data.load_all"] = ("--load_all", bool(args.load_all))
    run_fields = {
        "output_dir": str(args.out), "plot_mode": args.plot, "lc_only": bool(args.lc_only),
        "resume": args.resume, "overwrite": args.overwrite, "use_ddp": args.use_ddp,
        "preset_path": str(args.preset_file), "condition_path": str(args.condition),
    }
    return load_run_config(args.preset_file, args.condition, args.preset, cli_values, run_fields)
