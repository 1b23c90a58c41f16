"""The end-of-stage profile: the time split and the recommendation for the phase that dominates."""
from __future__ import annotations

import torch

from modules.training import profiling
from modules.training.profiling import StepTimer, summarize


def timer_with(**seconds) -> StepTimer:
    timer = StepTimer(torch.device("cpu"))
    timer.seconds.update(seconds)
    return timer


def test_phases_accumulate_the_clock_they_span(monkeypatch):
    ticks = iter([10.0, 10.25, 20.0, 20.5])  # a fake clock: the two phases span 0.25 s and 0.5 s
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: next(ticks))
    timer = StepTimer(torch.device("cpu"))
    for _ in range(2):
        with timer.phase("data"):
            pass
    charged = timer.seconds
    assert charged["data"] == 0.75 and charged["forward"] == 0.0


def test_split_and_the_recommendation_for_slow_data_loading():
    lines = summarize("vae", timer_with(data=6.0, forward=2.0, backward=2.0), 12.5, loading_in_memory=False)
    assert lines[0].startswith("vae profile: 12.5 cases/s; peak CPU memory ")
    assert lines[1] == "  time: data 60%, forward 20%, backward 20%, optimizer 0%, validation+checkpoints 0%"
    assert "raise num_workers in condition.txt to read cases in parallel, or use --load_all=1" in lines[2]


def test_network_bound_cpu_run_points_at_the_gpu_or_smaller_filters():
    lines = summarize("vae", timer_with(data=0.1, forward=4.0, backward=5.0, optimizer=0.5), 100.0, True)
    assert any("a GPU (--device=cuda) or smaller filters" in line for line in lines)
    assert not any("num_workers" in line for line in lines)


def test_checkpoint_heavy_run_points_at_checkpoint_every():
    lines = summarize("conditioner", timer_with(forward=1.0, backward=1.0, **{"validation+checkpoints": 2.0}), 5.0, True)
    assert any("raise checkpoint_every" in line for line in lines)
