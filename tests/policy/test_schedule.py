"""When to save (highmark.policy.schedule): every N evaluations, or Young's interval."""

from __future__ import annotations

import math

import pytest

from highmark.errors import ConfigError
from highmark.policy.schedule import SaveSchedule, young_interval


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_young_interval_is_sqrt_of_twice_cost_times_mtbf() -> None:
    assert young_interval(2.0, 3600.0) == pytest.approx(120.0)


@pytest.mark.parametrize(("cost", "mtbf"), [(0.0, 10.0), (1.0, -1.0), (math.inf, 1.0)])
def test_young_interval_refuses_non_positive_inputs(cost: float, mtbf: float) -> None:
    with pytest.raises(ConfigError):
        young_interval(cost, mtbf)


def test_every_n_is_due_at_each_nth_evaluation_since_the_last_save() -> None:
    schedule = SaveSchedule(every=3)
    due = []
    for _ in range(7):
        schedule.evaluated()
        due.append(schedule.due())
        if due[-1]:
            schedule.saved(0.1)
    assert due == [False, False, True, False, False, True, False]


def test_auto_is_due_at_once_then_after_youngs_interval() -> None:
    clock = Clock()
    schedule = SaveSchedule(every="auto", mtbf=3600.0, clock=clock)
    schedule.evaluated()
    assert schedule.due()  # no save cost measured yet
    assert schedule.saved(2.0)  # the interval is set: worth telling
    assert schedule.interval == pytest.approx(120.0)
    clock.now = 119.0
    schedule.evaluated()
    assert not schedule.due()
    clock.now = 120.0
    assert schedule.due()


def test_auto_averages_the_save_cost_and_says_only_when_the_interval_moves() -> None:
    schedule = SaveSchedule(every="auto", mtbf=100.0, clock=Clock())
    assert schedule.saved(1.0)
    assert not schedule.saved(1.1)  # 0.7 * 1.0 + 0.3 * 1.1: the interval moves by ~1.5 %
    assert schedule.save_cost == pytest.approx(1.03)
    assert schedule.saved(10.0)  # the cost jumps: the interval moves by more than a quarter


@pytest.mark.parametrize(
    ("every", "mtbf", "match"),
    [
        (0, None, "save_every must be an int >= 1"),
        (True, None, "save_every must be an int >= 1"),
        ("auto", None, "needs mtbf"),
        ("auto", 0.0, "needs mtbf"),
        (2, 60.0, "only used with"),
    ],
)
def test_bad_arguments_are_refused_naming_them(every: object, mtbf: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SaveSchedule(every=every, mtbf=mtbf)  # type: ignore[arg-type]
