"""The predict-latency benchmark measures the real thing: its model is the shipped one at the size asked for, its
basis is orthonormal, its stage clock neither changes the prediction nor stays wrapped, and its verdicts and
options read as documented. Nothing here depends on timing."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from benchmarks.predict_latency import (StageClock, build_surrogate, design_counts, goal_text, main,
                                        orthonormal_basis, random_designs, shipped_config, timed_stages)
from modules.models.conditioner_mlp import ParametricConditioner
from modules.surrogate.surrogate import Surrogate

NODES, TIMESTEPS, MODES = 300, 6, 8


@pytest.fixture(scope="module")
def surrogate(single_thread) -> Surrogate:
    return build_surrogate(NODES, TIMESTEPS, MODES)


@pytest.mark.parametrize("count", [1, 3])
def test_the_surrogate_predicts_float32_fields_of_the_size_asked_for(surrogate, count):
    fields = surrogate.predict(random_designs(surrogate, count)).fields
    assert fields.shape == (count, TIMESTEPS, NODES)
    assert fields.dtype == np.float32
    assert np.isfinite(fields).all()


def test_the_model_is_the_shipped_one_on_the_design_prior(surrogate):
    shipped = shipped_config()
    vae = surrogate.vae
    assert (vae.num_nodes, vae.num_timesteps, vae.num_modes) == (NODES, TIMESTEPS, MODES)
    assert (vae.layout.main, vae.layout.hier, vae.layout.levels) == (16, 4, 3)
    assert (vae.cfg.decoder_width, vae.cfg.decoder_depth) == (512, 4)
    assert vae.cfg.encoder_filters == shipped.model.encoder_filters
    assert vae.design_features == 5 and surrogate.conditioner.on_design_prior
    assert isinstance(surrogate.conditioner.model, ParametricConditioner)
    assert surrogate.conditioner.config.mlp_widths == (512, 512)
    assert not surrogate.scaler.clipped and surrogate.scaler.num_nodes == NODES


def test_the_basis_is_orthonormal(surrogate):
    modes = surrogate.vae.basis.modes.double()
    torch.testing.assert_close(modes.T @ modes, torch.eye(MODES, dtype=torch.float64), atol=1e-5, rtol=0)
    fresh = orthonormal_basis(50, 7, torch.Generator().manual_seed(3)).double()
    torch.testing.assert_close(fresh.T @ fresh, torch.eye(7, dtype=torch.float64), atol=1e-5, rtol=0)


def test_the_same_seed_builds_the_same_model(surrogate):
    again = build_surrogate(NODES, TIMESTEPS, MODES)
    designs = random_designs(surrogate, 2)
    np.testing.assert_array_equal(surrogate.predict(designs).fields, again.predict(designs).fields)


def test_timing_the_stages_changes_nothing_and_unwraps_on_exit(surrogate):
    designs = random_designs(surrogate, 2)
    plain = surrogate.predict(designs).fields
    with timed_stages(surrogate) as clock:
        timed = surrogate.predict(designs).fields
    np.testing.assert_array_equal(timed, plain)
    assert set(clock.seconds) == {"conditioner + design prior", "decoder MLP", "field readout"}
    for owner, attribute in ((surrogate, "predict_latents"), (surrogate.vae.decoder, "decode_timesteps"),
                             (surrogate.field_readout(), "write")):
        assert attribute not in vars(owner)


def test_a_stage_inside_another_is_counted_once():
    ticks = iter([0.0, 1.0, 3.0, 10.0])  # outer starts, inner starts, inner ends, outer ends
    clock = StageClock(now=lambda: next(ticks))
    inner = clock.wrap("inner", lambda: None)
    clock.wrap("outer", inner)()
    assert dict(clock.seconds) == {"inner": 2.0, "outer": 8.0}


def test_goals_read_met_or_not_met_and_say_when_the_core_count_differs():
    assert goal_text(1, 0.049, 2) == "< 50 ms: met"
    assert goal_text(1, 0.051, 2) == "< 50 ms: not met"
    assert goal_text(32, 0.4, 4) == "< 500 ms: met (goal is for 2 cores)"
    assert goal_text(7, 0.4, 2) == ""


def test_design_counts_are_positive_integers():
    assert design_counts("1,32") == [1, 32]
    for bad in ("", "0,4", "one"):
        with pytest.raises(argparse.ArgumentTypeError, match="--designs"):
            design_counts(bad)


def test_the_command_prints_one_row_per_design_count(capsys, single_thread):
    threads = torch.get_num_threads()
    try:
        measurements = main(["--nodes", str(NODES), "--timesteps", str(TIMESTEPS), "--modes", str(MODES),
                             "--repeats", "1", "--designs", "1,2"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert [m.designs for m in measurements] == [1, 2]
    assert all(len(m.predict) == len(m.write) == len(m.atomic_write) == 1 for m in measurements)
    assert measurements[1].output_bytes == 2 * TIMESTEPS * NODES * 4
    rows = [line.split() for line in printed.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in rows] == ["1", "2", "1", "2"]  # the latency table, then the stage table
    assert "predict/write" in printed and "CPU cores" in printed
