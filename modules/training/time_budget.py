"""The training time budget (`training_minutes`): how many epochs each stage can afford in it.

Epoch costs grow with cases x timesteps (a 300-case, 80-step sweep trains about 3x longer per epoch than the
development sweeps' 144 x 40), so fixed epoch counts that fit 15 minutes on one sweep take 40 on another. With a
budget, the VAE may use VAE_SHARE of it and the conditioner members what is left: shared equally by as many of them
as can each run MIN_MEMBER_EPOCH_FRACTION of their epochs in it, so that a tight budget trains fewer members nearly
whole rather than every member cut short (two members of 150 epochs predicted far worse than one of 300 on
impact-dev; README). A stage times its first PACE_EPOCHS epochs and keeps the epochs its allowance affords at their
median pace (never more than configured, never fewer than MIN_EPOCH_FRACTION of them), and plans again every tenth
of its configured epochs at the recent pace (a start slowed by another job must not decide the whole stage); its
cosine schedule goes on from the present rate to end at its floor on the last epoch kept, so a shortened run still
ends at a low learning rate. The budget never lengthens a run beyond its configured epochs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Union

# The VAE's part of the budget; members use what it leaves. On a fast box 500 VAE epochs fit in it either way;
# on a slow one 0.40 (against 0.55, the VAE's measured share with the shipped epochs) trains 2 members instead of 1:
# where the case PCA path is off the VAE no longer feeds parameter prediction, and the paired cut runs of
# 2026-12-06 predicted front-dev 0.484 / 0.516 (seed 1: 0.454 / 0.490) and impact-dev 0.240 / 0.246 with 0.40 / 0.55
# (README ablations).
VAE_SHARE = 0.40
# Epochs timed before a stage plans: the median of three is not thrown by the first one's one-off costs.
PACE_EPOCHS = 3
# A stage keeps at least this share of its configured epochs, even past its allowance: fewer would leave a
# model worse than no training time saved is worth (the log says the budget will be overrun).
MIN_EPOCH_FRACTION = 0.1
# The least share of its epochs a conditioner member is given, where the budget allows (the first always trains):
# cut to half its epochs a member predicted impact-dev's test designs at 0.40-0.44 against 0.31-0.39 (README).
MIN_MEMBER_EPOCH_FRACTION = 0.8

Allowance = Union[float, Callable[[float], float]]
"""A stage's seconds (math.inf: no budget), or a function of its measured seconds per epoch giving them."""


@dataclass
class TimeBudget:
    """Wall seconds the training stages may take together, counted from creation (math.inf: no budget)."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @classmethod
    def of_minutes(cls, minutes: float, clock: Callable[[], float] = time.monotonic) -> "TimeBudget":
        """`training_minutes` of the config: 0 means no budget."""
        return cls(minutes * 60.0 if minutes > 0 else math.inf, clock)

    @property
    def limited(self) -> bool:
        return math.isfinite(self.seconds)

    def seconds_left(self) -> float:
        return max(0.0, self.seconds - (self.clock() - self.started))

    def vae_allowance(self) -> float:
        """The VAE's seconds: its share of the budget, less what was spent before it started."""
        return max(0.0, self.seconds * VAE_SHARE - (self.clock() - self.started))

    def member_allowance(self, members_left: int, epochs: int) -> Allowance:
        """The next conditioner member's seconds, given its pace once measured: what is left now, shared equally
        by as many of the `members_left` (this one included) as can each run MIN_MEMBER_EPOCH_FRACTION of their
        `epochs` in it, at least this one. math.inf without a budget."""
        if not self.limited:
            return math.inf
        left = self.seconds_left()

        def allowance(seconds_per_epoch: float) -> float:
            return left / members_that_fit(members_left, left, epochs * seconds_per_epoch)
        return allowance


def members_that_fit(members_left: int, seconds_left: float, seconds_per_member: float) -> int:
    """How many members could each run MIN_MEMBER_EPOCH_FRACTION of their epochs (all of them take
    `seconds_per_member`) in `seconds_left`: within [1, members_left] (the next member trains whatever the budget)."""
    if seconds_per_member <= 0 or not math.isfinite(seconds_left):
        return max(1, members_left)
    return int(max(1, min(members_left, seconds_left // (MIN_MEMBER_EPOCH_FRACTION * seconds_per_member))))


def affords_another_member(seconds_left: float, seconds_per_epoch: float, epochs: int) -> bool:
    """Whether a member after the first is worth training: `seconds_left` afford MIN_MEMBER_EPOCH_FRACTION of its
    `epochs` at the pace the previous member measured (0: unmeasured, trains)."""
    if not math.isfinite(seconds_left) or seconds_per_epoch <= 0:
        return True
    return seconds_left >= MIN_MEMBER_EPOCH_FRACTION * epochs * seconds_per_epoch


def replanning_interval(configured: int) -> int:
    """Epochs between a stage's plans after its first: a tenth of its configured epochs."""
    return max(1, configured // 10)


def plan_tolerance(configured: int) -> int:
    """A later plan that moves the stage's end by fewer epochs than this (2 % of configured) is not taken: the
    pace wavers by a few percent between intervals (front-dev's VAE: 489, 500, 497 of 500)."""
    return max(1, round(configured * 0.02))


def affordable_epochs(configured: int, done: int, seconds_per_epoch: float, seconds_left: float) -> int:
    """The epochs a stage that has run `done` can run in all, with `seconds_left` of its allowance at
    `seconds_per_epoch`: within [MIN_EPOCH_FRACTION x configured (at least 1), configured], never below `done`."""
    if not math.isfinite(seconds_left):
        return configured
    least = max(done, 1, math.ceil(configured * MIN_EPOCH_FRACTION))
    if seconds_left <= 0:
        return min(configured, least)
    if seconds_per_epoch <= 0:  # a clock too coarse to time an epoch: nothing says the epochs do not fit
        return configured
    return int(min(configured, max(least, done + seconds_left // seconds_per_epoch)))
