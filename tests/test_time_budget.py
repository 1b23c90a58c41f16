"""The training time budget: each stage's allowance, and the epochs that fit in it."""
from __future__ import annotations

import math

import pytest

from modules.training.time_budget import MIN_EPOCH_FRACTION, VAE_SHARE, TimeBudget, affordable_epochs


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
    assert affordable_epochs(500, 2.0, budget.vae_allowance()) == 500


@pytest.mark.parametrize("configured, pace, allowance, expected", [
    (500, 2.1, 450.0, 214),   # 450 / 2.1 = 214.3: the whole epochs that fit
    (500, 0.8, 450.0, 500),   # they all fit: never more than configured
    (300, 1.8, 30.0, 30),     # 16 fit, but at least MIN_EPOCH_FRACTION of them run
    (300, 1.8, 0.0, 30),      # nothing left: the least
    (5, 1.0, 0.0, 1),         # at least one
    (300, 0.0, 10.0, 300),    # a clock too coarse to time an epoch says nothing against them
])
def test_affordable_epochs(configured, pace, allowance, expected):
    assert affordable_epochs(configured, pace, allowance) == expected
    assert expected >= max(1, math.ceil(configured * MIN_EPOCH_FRACTION))
