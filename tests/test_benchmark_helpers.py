"""The feature benchmarks' shared pieces: the split they measure on is the one the tool makes, and the time
interpolation they score kept timesteps with is exact where it should be."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.sweep_runs import Sweep, benchmark_split, condition_text
from benchmarks.temporal_downsampling import back_to_every_step
from modules.config.legacy_files import load_run_config
from modules.data.case_split import split_cases

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmarks_score_the_test_cases_of_the_split_the_tool_makes(tmp_path):
    sweep = Sweep("dev", tmp_path / "dataset1.npy", tmp_path / "params.csv", None, tmp_path / "coordinates.npy",
                  (50, 6, 9))
    condition = tmp_path / "condition.txt"
    condition.write_text(condition_text(sweep))
    config, _ = load_run_config(REPO / "preset.txt", condition)
    tool = split_cases(config.data, tmp_path)
    mine = benchmark_split(50)
    assert len(mine.test) == 10 and len(mine.validation) == 5
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(tool, name))


def test_kept_frames_are_interpolated_back_linearly_and_held_past_the_last():
    frames = np.array([[[0.0], [10.0], [40.0]]])  # kept steps 0, 2, 5 of 7
    every = back_to_every_step(frames, [0, 2, 5], 7)[0, :, 0]
    np.testing.assert_allclose(every, [0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 40.0])
