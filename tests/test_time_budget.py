"""The training time budget: each stage's allowance, and the epochs that fit in it."""
from __future__ import annotations

import math

import pytest

from modules.training.time_budget import (VAE_SHARE, TimeBudget, affordable_epochs, plan_tolerance,
                                          replanning_interval)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_vae_takes_its_share_and_each_member_an_equal_part_of_what_is_left():
    clock = FakeClock()
    budget = TimeBudget.of_minutes(10, clock)  # 600 s
    clock.now += 20.0  # the spatial basis and the projection before the VAE's first epoch
    assert budget.vae_allowance() == pytest.approx(600 * VAE_SHARE - 20)
    clock.now += 250.0  # the VAE ended under its share: the members get what it left
    assert budget.seconds_left() == pytest.approx(330)
    assert budget.member_allowance(members_left=2) == pytest.approx(165)
    clock.now += 200.0  # member 1 overran its part: the last member gets the rest, no more
    assert budget.member_allowance(members_left=1) == pytest.approx(130)
    clock.now += 1000.0
    assert budget.seconds_left() == 0.0 and budget.vae_allowance() == 0.0


def test_no_budget_allows_everything():
    budget = TimeBudget.of_minutes(0)
    assert not budget.limited
    assert math.isinf(budget.vae_allowance()) and math.isinf(budget.member_allowance(2))
    assert affordable_epochs(500, 3, 2.0, budget.vae_allowance()) == 500


@pytest.mark.parametrize("configured, done, pace, left, expected", [
    (500, 3, 2.1, 450.0, 217),   # 3 + 450 / 2.1 = 217.3: the whole epochs that fit
    (500, 3, 0.8, 450.0, 500),   # they all fit: never more than configured
    (300, 3, 1.8, 30.0, 30),     # 3 + 16 fit, but at least MIN_EPOCH_FRACTION of them run
    (300, 3, 1.8, 0.0, 30),      # nothing left: the least
    (300, 60, 1.8, -5.0, 60),    # overrun after the least: none beyond those run
    (5, 3, 1.0, 0.0, 3),         # never fewer than those already run
    (300, 3, 0.0, 10.0, 300),    # a clock too coarse to time an epoch says nothing against them
])
def test_affordable_epochs(configured, done, pace, left, expected):
    assert affordable_epochs(configured, done, pace, left) == expected
    assert affordable_epochs(configured, done, pace, math.inf) == configured


def test_a_stage_plans_again_every_tenth_of_its_epochs_and_ignores_changes_under_2_percent():
    assert [replanning_interval(epochs) for epochs in (500, 300, 40, 6)] == [50, 30, 4, 1]
    assert [plan_tolerance(epochs) for epochs in (500, 300, 40, 6)] == [10, 6, 1, 1]
