"""The training time budget: each stage's allowance, and the epochs that fit in it."""
from __future__ import annotations

import math

import pytest

from modules.training.time_budget import (VAE_SHARE, TimeBudget, affordable_epochs, affords_another_member,
                                          members_that_fit, plan_tolerance, replanning_interval)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_vae_takes_its_share_and_the_members_share_what_is_left():
    clock = FakeClock()
    budget = TimeBudget.of_minutes(10, clock)  # 600 s
    clock.now += 20.0  # the spatial basis and the projection before the VAE's first epoch
    assert budget.vae_allowance() == pytest.approx(600 * VAE_SHARE - 20)
    clock.now += 250.0  # the VAE ended under its share: the members get what it left
    assert budget.seconds_left() == pytest.approx(330)
    allowance = budget.member_allowance(members_left=2, epochs=100)
    clock.now += 5.0  # the allowance is what was left when the member started, whenever its pace is known
    assert allowance(1.0) == pytest.approx(165)   # two members of 100 s fit: an equal part each
    assert allowance(1.9) == pytest.approx(165)   # two of 87 epochs each: both get 80 % of theirs or more
    assert allowance(2.1) == pytest.approx(330)   # two would get 79 %: one gets all (all its 100 epochs)
    assert allowance(9.0) == pytest.approx(330)   # not even one: the first still trains, on everything
    clock.now += 200.0  # member 1 overran: the last member gets the rest, no more
    assert budget.member_allowance(members_left=1, epochs=100)(1.0) == pytest.approx(125)
    clock.now += 1000.0
    assert budget.seconds_left() == 0.0 and budget.vae_allowance() == 0.0


def test_members_that_fit_with_80_percent_of_their_epochs():
    assert members_that_fit(3, 1000.0, 300.0) == 3
    assert members_that_fit(3, 720.0, 300.0) == 3   # 80 % each
    assert members_that_fit(3, 719.0, 300.0) == 2
    assert members_that_fit(3, 239.0, 300.0) == 1   # the next member always trains
    assert members_that_fit(3, 0.0, 300.0) == 1
    assert members_that_fit(2, 10.0, 0.0) == 2      # an unmeasured pace says nothing against them
    assert members_that_fit(2, math.inf, 300.0) == 2


@pytest.mark.parametrize("left, pace, epochs, expected", [
    (240.0, 1.0, 300, True),     # exactly 80 % of its epochs
    (239.0, 1.0, 300, False),    # under 80 %: cut that short a member predicts far worse
    (0.0, 0.5, 300, False),
    (0.0, 0.0, 300, True),       # no pace measured: nothing says it does not fit
    (math.inf, 1.0, 300, True),  # no budget
])
def test_a_later_member_trains_only_with_most_of_its_epochs(left, pace, epochs, expected):
    assert affords_another_member(left, pace, epochs) is expected


def test_no_budget_allows_everything():
    budget = TimeBudget.of_minutes(0)
    assert not budget.limited
    assert math.isinf(budget.vae_allowance()) and math.isinf(budget.member_allowance(2, 300))
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
