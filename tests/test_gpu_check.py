"""benchmarks/gpu_check.py: runnable here (it skips every CUDA part cleanly) and its utilisation arithmetic."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_cards_are_found_by_their_torch_name_and_utilisation_is_achieved_over_peak():
    assert gpu_check.card_peak("NVIDIA H200") == (989.0, 494.0)
    assert gpu_check.card_peak("NVIDIA A100-SXM4-80GB") == (312.0, 156.0)
    assert gpu_check.card_peak("Some Future Card") is None
    assert gpu_check.utilisation(4.0e12, 0.01, 989.0) == pytest.approx(400.0 / 989.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip path of a machine without CUDA")
def test_without_cuda_the_script_says_what_it_skipped_and_succeeds():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout and "skipped" in done.stdout


def test_the_step_benchmark_counts_the_flops_of_a_real_training_step_on_the_cpu():
    result = gpu_check.step_benchmark("demo", None, steps=1, batch=2, device="cpu")
    # A 1.7 M-weight network on 2 cases x 10 timesteps: well above a megaflop, far below a teraflop.
    assert 1e6 < result["flops"] < 1e12
    assert result["peak_gib"] == 0.0  # no CUDA memory on the CPU


@pytest.mark.parametrize("amp", [0, 1])
def test_the_demo_runs_read_the_shipped_condition_file_with_only_amp_members_and_budget_changed(tmp_path, amp):
    from modules.config.legacy_files import load_run_config

    shipped_text = (ROOT / "input_data" / "condition.txt").read_text()
    written = tmp_path / "condition.txt"
    written.write_text(gpu_check.demo_condition(shipped_text, amp, members=2))
    config, _ = load_run_config(ROOT / "preset.txt", written)  # a duplicate key would be refused here
    shipped, _ = load_run_config(ROOT / "preset.txt", ROOT / "input_data" / "condition.txt")
    assert config.train.amp is bool(amp)
    assert config.conditioner.ensemble_members == 2 and config.train.training_minutes == 0.0
    assert config.train.epochs == shipped.train.epochs and config.data == shipped.data
