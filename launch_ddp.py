"""Start SimulGen-VAE.py on several processes (GPUs, nodes) with PyTorch's torchrun.

    python launch_ddp.py [--nproc N] [--nnodes M --node-rank R --master-addr HOST --master-port PORT]
                         [--max-restarts K] [--dry-run] [-- TRAINING FLAGS]

The launcher only builds one `python -m torch.distributed.run ...` command, prints it and runs it; torchrun
does the spawning, rendezvous and restarts, and SimulGen-VAE.py --use_ddp joins the process group from
torchrun's environment (NCCL on GPUs, gloo on CPUs).
"""
from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from modules.config.cli import non_negative_int, positive_int

TRAINING_SCRIPT = Path(__file__).resolve().parent / "SimulGen-VAE.py"
LOCAL_HOST = "127.0.0.1"
# Subcommands of SimulGen-VAE.py that run in one process and have no --use_ddp flag.
SINGLE_PROCESS_COMMANDS = ("predict", "reconstruct")

EXAMPLES = """\
Every flag the launcher does not know, and everything after a literal --, goes to SimulGen-VAE.py
unchanged; --use_ddp is added when missing. A group restarted by --max-restarts resumes from the last
checkpoint in --out by itself.

examples:
  # one node, one process per visible CUDA GPU
  python launch_ddp.py -- --preset=1 --plot=2 --out=runs/demo

  # CPU test of the distributed path: 2 processes talking over gloo
  python launch_ddp.py --nproc 2 -- --preset=1 --plot=2 --device=cpu --epochs=2 --out=runs/cpu_test

  # two nodes with 4 GPUs each; node 0 (address 10.0.0.1) hosts the rendezvous
  #   on node 0:
  python launch_ddp.py --nproc 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 -- --preset=1
  #   on node 1:
  python launch_ddp.py --nproc 4 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500 -- --preset=1

  # fault tolerance: if a process dies, restart the whole group up to 3 times from the last checkpoint
  python launch_ddp.py --max-restarts 3 -- --preset=1 --out=runs/long_run

  # only print the torchrun command
  python launch_ddp.py --nproc 2 --dry-run -- --preset=1
"""


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a training flag that happens to be a prefix of a launcher flag must reach the script.
    parser = argparse.ArgumentParser(
        prog="launch_ddp.py", allow_abbrev=False, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train SimulGen-VAE on several processes with DistributedDataParallel, launched by\n"
                    "PyTorch's torchrun (python -m torch.distributed.run). Prints the exact command, runs it\n"
                    "and exits with its return code.")
    parser.add_argument("--nproc", type=positive_int,
                        help="processes on this node (default: one per CUDA GPU; 1 on a CPU-only machine). "
                             "More than 1 on CPU uses gloo, for testing")
    parser.add_argument("--nnodes", type=positive_int, default=1, help="number of machines (default 1)")
    parser.add_argument("--node-rank", type=non_negative_int,
                        help="this machine's index, 0 to NNODES-1 (required when --nnodes > 1)")
    parser.add_argument("--master-addr",
                        help="address of node 0, reachable from every node (required when --nnodes > 1; "
                             f"single node: {LOCAL_HOST})")
    parser.add_argument("--master-port", type=_port,
                        help="free TCP port on node 0 (required when --nnodes > 1; single node: a free port "
                             "is picked)")
    parser.add_argument("--max-restarts", type=non_negative_int, default=0,
                        help="restart the process group up to K times after a failure (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="print the torchrun command without running it")
    return parser


def parse_launcher_args(argv: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """(launcher flags, arguments for SimulGen-VAE.py in their original order)."""
    argv = list(argv)
    # Split at the first literal "--" ourselves: argparse would drop it and could claim what follows.
    if "--" in argv:
        split = argv.index("--")
        own, verbatim = argv[:split], argv[split + 1:]
    else:
        own, verbatim = argv, []
    args, unknown = build_parser().parse_known_args(own)
    return args, unknown + verbatim


def find_free_port(host: str = "") -> int:
    """A TCP port that was free a moment ago (the OS picks it for port 0); "" checks every local address,
    as torchrun's store listens on all of them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def cuda_device_count() -> int:
    import torch  # imported here so --help and argument errors stay instant

    return torch.cuda.device_count()


def _forwarded_device(forwarded: Sequence[str]) -> Optional[str]:
    """The value of --device among the training flags (the last one wins, as in argparse), or None."""
    device = None
    for index, token in enumerate(forwarded):
        if token.startswith("--device="):
            device = token.split("=", 1)[1]
        elif token == "--device" and index + 1 < len(forwarded):
            device = forwarded[index + 1]
    return device


def launch_problems(args: argparse.Namespace, forwarded: Sequence[str], nproc: int, gpu_count: int) -> List[str]:
    """Every reason the launch cannot work, each with the flag that fixes it."""
    problems = []
    if args.nnodes > 1:
        needed = [("--node-rank", args.node_rank, f"this machine's index, 0 to {args.nnodes - 1}"),
                  ("--master-addr", args.master_addr, "the address of node 0 that every node can reach"),
                  ("--master-port", args.master_port, "a free TCP port on node 0, the same on every node")]
        for flag, value, meaning in needed:
            if value is None:
                problems.append(f"--nnodes {args.nnodes} needs {flag}: add {flag} ({meaning})")
        if args.node_rank is not None and args.node_rank >= args.nnodes:
            problems.append(f"--node-rank {args.node_rank} is out of range for --nnodes {args.nnodes}: "
                            f"use 0 to {args.nnodes - 1}")
    elif args.node_rank not in (None, 0):
        problems.append(f"--node-rank {args.node_rank} needs --nnodes > {args.node_rank}: "
                        f"add --nnodes, or leave --node-rank out on a single node")
    if forwarded and forwarded[0] in SINGLE_PROCESS_COMMANDS:
        problems.append(f"'{forwarded[0]}' runs in one process: use python SimulGen-VAE.py {forwarded[0]} ... "
                        f"instead of launch_ddp.py")
    device = _forwarded_device(forwarded)
    on_cpu = device == "cpu" or gpu_count == 0
    if not on_cpu and nproc > gpu_count:
        problems.append(f"--nproc {nproc} but this node has {gpu_count} CUDA GPU(s), and each process takes one: "
                        f"use --nproc {gpu_count}, or add --device=cpu after -- to test on CPU")
    if device is not None and device.startswith("cuda:") and nproc > 1:
        problems.append(f"--device={device} puts all {nproc} processes on one GPU: leave --device out "
                        f"(process N takes cuda:N)")
    return problems


def build_torchrun_command(args: argparse.Namespace, forwarded: Sequence[str], python: str = sys.executable,
                           gpu_count: Optional[int] = None) -> List[str]:
    """The torchrun command line for these launcher flags; raises SystemExit naming every problem."""
    if gpu_count is None:
        gpu_count = cuda_device_count()
    nproc = args.nproc if args.nproc is not None else max(gpu_count, 1)
    problems = launch_problems(args, forwarded, nproc, gpu_count)
    if problems:
        raise SystemExit("launch_ddp.py: error: " + "\n  ".join(problems))
    # Static rendezvous on an explicit address and port: torchrun's default backend, and the one where
    # --node-rank, --master-addr and --master-port mean what they say on every node.
    master_addr = args.master_addr if args.master_addr is not None else LOCAL_HOST
    master_port = args.master_port if args.master_port is not None else find_free_port()
    training_args = list(forwarded)
    if "--use_ddp" not in training_args:
        training_args.append("--use_ddp")
    return [python, "-m", "torch.distributed.run",
            "--nnodes", str(args.nnodes),
            "--nproc_per_node", str(nproc),
            "--node_rank", str(args.node_rank if args.node_rank is not None else 0),
            "--master_addr", master_addr,
            "--master_port", str(master_port),
            "--max_restarts", str(args.max_restarts),
            str(TRAINING_SCRIPT), *training_args]


def run_command(command: Sequence[str]) -> int:
    """Run the command in the foreground and return its exit status (128 + N when killed by signal N)."""
    process = subprocess.Popen(list(command))
    try:
        return_code = process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reaches torchrun too (same process group); let it stop its workers and report.
        return_code = process.wait()
    return 128 - return_code if return_code < 0 else return_code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, forwarded = parse_launcher_args(sys.argv[1:] if argv is None else argv)
    gpu_count = cuda_device_count()
    command = build_torchrun_command(args, forwarded, gpu_count=gpu_count)
    if args.nproc is None and gpu_count == 0:
        print("launch_ddp.py: no CUDA GPU visible, starting 1 process on CPU (gloo); "
              "pass --nproc N for more", file=sys.stderr)
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return run_command(command)


if __name__ == "__main__":
    sys.exit(main())
