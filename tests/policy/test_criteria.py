"""The composable criteria: each one's rule, reason, state and config."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import highmark
from highmark.criteria import (
    AllOf,
    AnyOf,
    Criterion,
    Divergence,
    GeneralizationLoss,
    MaxSteps,
    NonFinite,
    Patience,
    ProgressQuotient,
    SuccessiveIncreases,
    Threshold,
    TimeBudget,
)
from highmark.errors import ConfigError
from highmark.policy.monitor import Monitor

NAN = math.nan


class FakeClock:
    """A settable clock for TimeBudget and seconds patience (no sleeping in tests)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def every_criterion() -> list[Any]:
    return [
        Patience(2),
        Threshold(0.1),
        Divergence(10.0),
        NonFinite(),
        MaxSteps(5),
        TimeBudget(60, clock=FakeClock()),
        GeneralizationLoss(5),
        ProgressQuotient(0.5, strip=2),
        SuccessiveIncreases(2, strip=2),
        AnyOf(MaxSteps(3), Threshold(0.2)),
        AllOf(MaxSteps(3), Threshold(0.2)),
    ]


def test_highmark_criteria_module_is_public() -> None:
    assert highmark.criteria.GeneralizationLoss is GeneralizationLoss


def test_every_criterion_satisfies_the_protocol() -> None:
    for c in every_criterion():
        assert isinstance(c, Criterion), c


def test_every_criterion_config_is_json_with_its_kind() -> None:
    for c in every_criterion():
        config = json.loads(json.dumps(c.config()))
        assert config["kind"] == type(c).__name__


def test_every_criterion_state_round_trips_through_json() -> None:
    rows = [
        {"val_loss": v, "train_loss": t}
        for v, t in [(1.0, 0.9), (0.8, 0.7), (0.9, 0.69), (1.0, 0.68), (1.2, 0.67), (1.3, 0.66)]
    ]
    for make_a, make_b in zip(every_criterion(), every_criterion(), strict=True):
        for row in rows[:3]:
            make_a.update(row)
        make_b.load_state_dict(json.loads(json.dumps(make_a.state_dict())))
        assert [make_a.update(r) for r in rows[3:]] == [make_b.update(r) for r in rows[3:]]


def test_every_criterion_explains_itself_when_it_fires() -> None:
    rows = [{"val_loss": v, "train_loss": 0.5} for v in (0.5, 0.6, 0.7, 0.8, 0.05, 20.0, NAN)]
    for c in every_criterion():
        fired = False
        for step, row in enumerate(rows):
            if isinstance(c, TimeBudget):
                c.clock.now = step * 30.0  # type: ignore[attr-defined]
            if c.update(row, step=step):
                fired = True
                break
        assert fired, c
        assert isinstance(c.reason, str), c
        assert len(c.reason) > 15, c


def test_reset_forgets_everything() -> None:
    c = Patience(1)
    c.update(1.0)
    assert c.update(2.0)
    c.reset()
    assert (c.best, c.wait, c.reason) == (math.inf, 0, None)


def test_threshold_fires_when_strictly_better() -> None:
    t = Threshold(0.5, monitor="acc", mode="max")
    assert not t.update({"acc": 0.5})
    assert t.update({"acc": 0.51})


def test_divergence_fires_when_strictly_worse() -> None:
    d = Divergence(2.0)
    assert not d.update(2.0)
    assert d.update(2.5)
    assert "diverging" in str(d.reason)


def test_non_finite_fires_on_nan_and_inf() -> None:
    for bad in (NAN, math.inf, -math.inf):
        assert NonFinite().update(bad)
    assert not NonFinite().update(1e308)


def test_max_steps_fires_at_n() -> None:
    m = MaxSteps(10)
    assert not m.update({}, step=9)
    assert m.update({}, step=10)


def test_max_steps_counts_updates_without_step() -> None:
    m = MaxSteps(2)
    assert [m.update({}) for _ in range(3)] == [False, False, True]


def test_time_budget_starts_at_the_first_update() -> None:
    clock = FakeClock(1000.0)
    tb = TimeBudget(10, clock=clock)
    clock.now = 5000.0
    assert not tb.update({})
    clock.now = 5009.0
    assert not tb.update({})
    clock.now = 5010.0
    assert tb.update({})
    assert "10 s" in str(tb.reason)


def test_time_budget_start_starts_the_clock_early() -> None:
    clock = FakeClock(0.0)
    tb = TimeBudget(10, clock=clock)
    tb.start()
    clock.now = 11.0
    assert tb.update({})


def test_time_budget_continues_the_elapsed_time_after_load() -> None:
    clock = FakeClock(0.0)
    a = TimeBudget(100, clock=clock)
    a.update({})
    clock.now = 70.0
    later = FakeClock(9000.0)
    b = TimeBudget(100, clock=later)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    later.now = 9029.0
    assert not b.update({})
    later.now = 9031.0
    assert b.update({})


def test_any_of_fires_with_the_first_firing_reason() -> None:
    c = AnyOf(Threshold(0.1), MaxSteps(100))
    assert not c.update(0.5, step=1)
    assert c.update(0.05, step=2)
    assert "stopping threshold" in str(c.reason)


def test_all_of_needs_every_child_at_once() -> None:
    c = AllOf(Threshold(0.1), MaxSteps(3))
    assert not c.update(0.05, step=1)
    assert not c.update(0.5, step=3)
    assert c.update(0.05, step=4)
    assert " and " in str(c.reason)


def test_any_of_updates_every_child_each_time() -> None:
    later = MaxSteps(100)
    c = AnyOf(Threshold(1.0), later)
    c.update(0.5)
    c.update(0.5)
    assert later.state_dict()["count"] == 2


def test_composites_bind_children_to_a_stopper_monitor() -> None:
    gl = GeneralizationLoss(5)
    es = highmark.EarlyStopping(monitor="val_err", criteria=[AnyOf(gl, MaxSteps(9))])
    assert gl.monitor is es.monitor


def test_prechelt_criteria_refuse_a_max_mode_monitor() -> None:
    with pytest.raises(ConfigError, match="min"):
        GeneralizationLoss(5, monitor=Monitor("acc", mode="max"))
    with pytest.raises(ConfigError, match="min"):
        highmark.EarlyStopping(monitor="acc", mode="max", criteria=[SuccessiveIncreases(2)])


@pytest.mark.parametrize(
    "make",
    [
        lambda: MaxSteps(-1),
        lambda: TimeBudget(-5),
        lambda: TimeBudget(math.inf),
        lambda: Threshold(NAN),
        lambda: GeneralizationLoss(-1),
        lambda: ProgressQuotient(1, strip=0),
        lambda: ProgressQuotient(1, train_monitor=""),
        lambda: SuccessiveIncreases(0),
        lambda: AnyOf(),
        lambda: AllOf(object()),  # type: ignore[arg-type]
        lambda: Patience(-1),
        lambda: Patience(1, unit="epochs"),
    ],
)
def test_construction_validates_arguments(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize(
    ("criterion", "state", "match"),
    [
        (MaxSteps(3), {"count": "1", "reason": None}, "'count'"),
        (TimeBudget(3), {"reason": None}, "'elapsed'"),
        (GeneralizationLoss(3), {"count": 1, "reason": None, "e_opt": None, "gl": 1.0}, "e_opt"),
        (AnyOf(MaxSteps(1)), {"criteria": [], "reason": None}, "'criteria'"),
        (Patience(3), [], "dict"),
    ],
)
def test_load_state_dict_names_the_bad_key(criterion: Any, state: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        criterion.load_state_dict(state)


def test_a_criterion_given_a_mode_keeps_its_own_monitor() -> None:
    t = Threshold(0.9, mode="max")
    highmark.EarlyStopping(monitor="val_loss", criteria=[t])
    assert t.monitor.mode == "max"
