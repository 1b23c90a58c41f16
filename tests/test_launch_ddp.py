"""launch_ddp.py builds the right torchrun command; nothing here starts distributed training."""
from __future__ import annotations

import importlib.util
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser as torchrun_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_PATH = REPO_ROOT / "launch_ddp.py"


def _load_launcher():
    spec = importlib.util.spec_from_file_location("launch_ddp", LAUNCHER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch_ddp = _load_launcher()


def build(argv, gpu_count=0, python="/opt/py/bin/python3"):
    args, forwarded = launch_ddp.parse_launcher_args(argv)
    return launch_ddp.build_torchrun_command(args, forwarded, python=python, gpu_count=gpu_count)


def value_of(command, flag):
    return command[command.index(flag) + 1]


def training_args(command):
    """What follows the script path: the arguments SimulGen-VAE.py receives."""
    return command[command.index(str(launch_ddp.TRAINING_SCRIPT)) + 1:]


def test_single_node_command_has_torchrun_master_and_forwarded_args_in_order():
    command = build(["--nproc", "2", "--preset=1", "--plot", "2", "--out=runs/a b"])
    assert command[:3] == ["/opt/py/bin/python3", "-m", "torch.distributed.run"]
    assert "-m torch.distributed.run" in shlex.join(command)
    assert value_of(command, "--nproc_per_node") == "2"
    assert value_of(command, "--nnodes") == "1"
    assert value_of(command, "--node_rank") == "0"
    assert value_of(command, "--master_addr") == "127.0.0.1"
    assert 1 <= int(value_of(command, "--master_port")) <= 65535
    assert value_of(command, "--max_restarts") == "0"
    assert launch_ddp.TRAINING_SCRIPT == REPO_ROOT / "SimulGen-VAE.py"
    assert launch_ddp.TRAINING_SCRIPT.is_file()
    assert training_args(command) == ["--preset=1", "--plot", "2", "--out=runs/a b", "--use_ddp"]


def test_torchrun_own_parser_reads_the_command_as_intended():
    command = build(["--nproc", "3", "--max-restarts", "2", "--master-port", "29612", "--seed", "-1"])
    parsed = torchrun_parser().parse_args(command[3:])
    assert (parsed.nnodes, parsed.nproc_per_node, parsed.node_rank) == ("1", "3", 0)
    assert (parsed.master_addr, parsed.master_port, parsed.max_restarts) == ("127.0.0.1", 29612, 2)
    assert parsed.rdzv_backend == "static" and not parsed.standalone
    assert parsed.training_script == str(launch_ddp.TRAINING_SCRIPT)
    assert parsed.training_script_args == ["--seed", "-1", "--use_ddp"]


def test_default_nproc_is_the_gpu_count_or_one_on_cpu():
    assert value_of(build([], gpu_count=4), "--nproc_per_node") == "4"
    assert value_of(build([], gpu_count=0), "--nproc_per_node") == "1"
    # More processes than cores is allowed on CPU: gloo, for testing.
    assert value_of(build(["--nproc", "3"], gpu_count=0), "--nproc_per_node") == "3"


def test_use_ddp_is_not_duplicated_when_already_given():
    command = build(["--use_ddp", "--preset=2"])
    assert training_args(command) == ["--use_ddp", "--preset=2"]
    assert command.count("--use_ddp") == 1


def test_multi_node_command_names_nodes_rank_and_master():
    command = build(["--nproc", "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
                     "--master-port", "29500", "--max-restarts", "3", "--preset=1"], gpu_count=4)
    assert value_of(command, "--nnodes") == "2"
    assert value_of(command, "--node_rank") == "1"
    assert value_of(command, "--master_addr") == "10.0.0.1"
    assert value_of(command, "--master_port") == "29500"
    assert value_of(command, "--max_restarts") == "3"
    assert value_of(command, "--nproc_per_node") == "4"
    assert training_args(command) == ["--preset=1", "--use_ddp"]


def test_multi_node_without_master_addr_exits_naming_the_flag_to_add():
    with pytest.raises(SystemExit) as raised:
        build(["--nnodes", "2", "--node-rank", "0", "--master-port", "29500"])
    message = str(raised.value.code)
    assert "--nnodes 2 needs --master-addr: add --master-addr" in message
    assert "needs --master-port" not in message and "needs --node-rank" not in message


def test_multi_node_reports_every_missing_flag_at_once():
    with pytest.raises(SystemExit) as raised:
        build(["--nnodes", "3"])
    message = str(raised.value.code)
    for flag in ("--node-rank", "--master-addr", "--master-port"):
        assert f"--nnodes 3 needs {flag}: add {flag}" in message


def test_node_rank_out_of_range_is_refused():
    with pytest.raises(SystemExit) as raised:
        build(["--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "--master-port", "1234"])
    assert "--node-rank 2 is out of range for --nnodes 2: use 0 to 1" in str(raised.value.code)


def test_more_processes_than_gpus_is_refused_unless_on_cpu():
    with pytest.raises(SystemExit) as raised:
        build(["--nproc", "4"], gpu_count=2)
    assert "--nproc 4 but this node has 2 CUDA GPU(s)" in str(raised.value.code)
    assert value_of(build(["--nproc", "4", "--device=cpu"], gpu_count=2), "--nproc_per_node") == "4"
    assert value_of(build(["--nproc", "4", "--", "--device", "cpu"], gpu_count=2), "--nproc_per_node") == "4"


def test_single_process_subcommands_are_refused():
    with pytest.raises(SystemExit) as raised:
        build(["--", "predict", "--model", "model_save"])
    assert "use python SimulGen-VAE.py predict" in str(raised.value.code)


def test_invalid_launcher_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as raised:
        launch_ddp.parse_launcher_args(["--nproc", "0"])
    assert raised.value.code == 2
    assert "--nproc: expected a positive number, got 0" in capsys.readouterr().err


def test_free_port_is_an_int_in_range_and_bindable():
    port = launch_ddp.find_free_port()
    assert isinstance(port, int) and 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))


def test_given_master_port_is_used_verbatim():
    assert value_of(build(["--master-port", "29777"]), "--master_port") == "29777"


def test_arguments_after_double_dash_are_forwarded_verbatim_even_launcher_flags():
    args, forwarded = launch_ddp.parse_launcher_args(
        ["--nproc", "2", "--preset=1", "--", "--nproc", "7", "--dry-run", "--", "x"])
    assert args.nproc == 2 and not args.dry_run
    assert forwarded == ["--preset=1", "--nproc", "7", "--dry-run", "--", "x"]


def test_prefix_of_a_launcher_flag_is_forwarded_not_claimed():
    args, forwarded = launch_ddp.parse_launcher_args(["--nproc", "2", "--max", "5", "--dry"])
    assert args.max_restarts == 0 and not args.dry_run
    assert forwarded == ["--max", "5", "--dry"]


def test_help_shows_the_four_examples():
    text = launch_ddp.build_parser().format_help()
    assert "--nproc 2 -- --preset=1 --plot=2 --device=cpu" in text
    assert "--nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500" in text
    assert "--nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500" in text
    assert "--max-restarts 3" in text
    assert "python launch_ddp.py -- --preset=1" in text


def test_dry_run_prints_the_command_and_starts_nothing(tmp_path):
    out_dir = tmp_path / "run dir"
    result = subprocess.run(
        [sys.executable, str(LAUNCHER_PATH), "--nproc", "2", "--dry-run", "--", "--preset=1",
         f"--out={out_dir}", "--device=cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    command = shlex.split(lines[0])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert value_of(command, "--nproc_per_node") == "2"
    assert training_args(command) == ["--preset=1", f"--out={out_dir}", "--device=cpu", "--use_ddp"]
    assert not out_dir.exists()


def test_run_command_returns_the_child_exit_status():
    assert launch_ddp.run_command([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    killed = launch_ddp.run_command([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert killed == 128 + signal.SIGTERM
