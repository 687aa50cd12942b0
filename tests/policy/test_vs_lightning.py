"""Differential test: highmark.EarlyStopping against Lightning's EarlyStopping callback.

Lightning's callback is driven through ``_evaluate_stopping_criteria(current_tensor)``, the method
its ``on_validation_end`` hook calls with the logged value; it has no baseline or warm-up, and
takes ``min_delta`` as given (so only ``min_delta >= 0`` is swept; the negative case is a
documented corner, tested below).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from policy_curves import GRID, INF, NAN, first_is_no_improvement, same, walk

from highmark import EarlyStopping

CURVES = 3000


@dataclass
class Outcome:
    stop: int | None
    cause: str
    best: float
    wait: int


def run_lightning(case: dict[str, Any], values: list[float]) -> Outcome:
    cb = LightningEarlyStopping(monitor="val_loss", **case)
    stop = None
    for epoch, value in enumerate(values):
        should_stop, _ = cb._evaluate_stopping_criteria(torch.tensor(value, dtype=torch.float64))
        if should_stop:
            stop = epoch
            break
    cause = cb.stopping_reason.name.lower()  # an int-valued enum with the same names as ours
    return Outcome(stop, cause, float(cb.best_score), cb.wait_count)


def run_highmark(case: dict[str, Any], values: list[float]) -> Outcome:
    es = EarlyStopping(monitor="val_loss", **case)
    stop = None
    for epoch, value in enumerate(values):
        if es.update({"val_loss": value}):
            stop = epoch
            break
    return Outcome(stop, es.stop_cause.value, es.best, es.wait)


def random_case(rng: random.Random) -> dict[str, Any]:
    return {
        "mode": rng.choice(["min", "max"]),
        "patience": rng.choice([0, 1, 1, 2, 3, 5]),
        "min_delta": rng.choice([0.0, 0.0, 0.125, 0.25]),
        "check_finite": rng.random() < 0.5,
        "stopping_threshold": rng.choice([None, None, rng.choice(GRID)]),
        "divergence_threshold": rng.choice([None, None, rng.choice(GRID)]),
    }


def test_same_stops_as_lightning_on_generated_curves() -> None:
    rng = random.Random(3)
    causes: dict[str, int] = {}
    compared = 0
    for _ in range(CURVES):
        case = random_case(rng)
        values = walk(rng, rng.randint(1, 12))
        if not case["check_finite"] and first_is_no_improvement(values, 0, case["mode"]):
            continue  # the documented corner, tested on its own below
        theirs, ours = run_lightning(case, values), run_highmark(case, values)
        detail = (case, values, theirs, ours)
        assert ours.stop == theirs.stop, detail
        assert ours.cause == theirs.cause, detail
        assert same(ours.best, theirs.best), detail
        assert ours.wait == theirs.wait, detail
        compared += 1
        causes[theirs.cause] = causes.get(theirs.cause, 0) + 1
    assert compared > CURVES * 0.9
    # every stop cause shows up often enough to count as tested
    assert set(causes) == {
        "not_stopped",
        "non_finite_metric",
        "stopping_threshold",
        "divergence_threshold",
        "patience_exhausted",
    }
    assert min(causes.values()) > 50, causes


@pytest.mark.parametrize("first", [NAN, INF])
def test_corner_non_finite_first_value_lightning_stops_at_step_zero(first: float) -> None:
    case = {"mode": "min", "patience": 1, "min_delta": 0.0, "check_finite": False}
    values = [first, 1.0, 0.5]
    theirs, ours = run_lightning(case, values), run_highmark(case, values)
    assert theirs.stop == 0  # Lightning counts it against patience
    assert ours.stop is None  # highmark: no improvement, but never a stop at step 0
    assert ours.best == 0.5


def test_corner_negative_min_delta_lightning_loosens_the_test() -> None:
    values = [1.0, 1.125, 1.25, 1.375]
    theirs = run_lightning({"mode": "min", "patience": 1, "min_delta": -0.25}, values)
    ours = run_highmark({"mode": "min", "patience": 1, "min_delta": -0.25}, values)
    # Lightning: 1.125 - 0.25 < 1.0 counts as an improvement although the loss went up
    assert theirs.stop is None
    assert theirs.best == 1.375
    # highmark (like Keras): |min_delta| is required, so the rising loss stops training
    assert ours.stop == 1
    assert ours.best == 1.0
