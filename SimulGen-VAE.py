"""SimulGenVAE: a hierarchical VAE surrogate for parametric sweeps of transient simulations.

    python SimulGen-VAE.py --preset=1 --plot=1 --lc_only=0 --size=small --load_all=1
    python SimulGen-VAE.py predict --model model_save --params designs.csv --out pred.npy
    python SimulGen-VAE.py reconstruct --model model_save --data FILE --out recon.npy

Run with --help (or `predict --help`, `reconstruct --help`) for every flag.
"""
from __future__ import annotations

import sys

from modules.config.cli import parse_command, train_config_from_args
from modules.errors import SimulGenError, TrainingInterrupted


def main(argv: list) -> int:
    command, args = parse_command(argv)
    try:
        if command == "train":
            from modules.commands.train import run_training

            config, notices = train_config_from_args(args)
            run_training(config, notices, show_progress=not args.quiet)
        elif command == "reconstruct":
            from modules.commands.reconstruct import run_reconstruct

            run_reconstruct(args)
        else:
            from modules.commands.predict import run_predict

            run_predict(args)
    except TrainingInterrupted as stop:
        print(f"\ninterrupted: {stop}", file=sys.stderr)
        return 130
    except SimulGenError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
