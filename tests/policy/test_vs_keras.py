"""Differential test: highmark.EarlyStopping against Keras 3's EarlyStopping callback.

Keras is driven as in ``model.fit``: ``set_model`` (a tiny real model), ``on_train_begin``, then
``on_epoch_end(epoch, logs)`` until ``model.stop_training``. Keras has no NaN check, so highmark
runs with ``check_finite=False``.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"

import keras
import pytest
from policy_curves import GRID, NAN, first_is_no_improvement, same, walk

from highmark import EarlyStopping

CURVES = 3000


@dataclass
class Outcome:
    stop: int | None
    best: float
    wait: int


@pytest.fixture(scope="module")
def model() -> Any:
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


def run_keras(model: Any, case: dict[str, Any], values: list[float]) -> Outcome:
    cb = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        mode=case["mode"],
        patience=case["patience"],
        min_delta=case["min_delta"],
        baseline=case["baseline"],
        start_from_epoch=case["start_from"],
    )
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_begin()
    stop = None
    for epoch, value in enumerate(values):
        cb.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            stop = epoch
            break
    initial = math.inf if case["mode"] == "min" else -math.inf
    best = initial if cb.best is None else float(cb.best)
    return Outcome(stop, best, cb.wait)


def run_highmark(case: dict[str, Any], values: list[float]) -> Outcome:
    es = EarlyStopping(monitor="val_loss", check_finite=False, **case)
    stop = None
    for epoch, value in enumerate(values):
        if es.update({"val_loss": value}):
            stop = epoch
            break
    return Outcome(stop, es.best, es.wait)


def random_case(rng: random.Random) -> dict[str, Any]:
    return {
        "mode": rng.choice(["min", "max"]),
        "patience": rng.choice([0, 1, 1, 2, 3, 5]),
        "min_delta": rng.choice([0.0, 0.0, 0.125, 0.25, -0.125]),
        "baseline": rng.choice([None, None, rng.choice(GRID)]),
        "start_from": rng.choice([0, 0, 0, 1, 3]),
    }


def test_same_stops_as_keras_on_generated_curves(model: Any) -> None:
    rng = random.Random(2)
    compared = stopped = with_baseline = 0
    for _ in range(CURVES):
        case = random_case(rng)
        values = walk(rng, rng.randint(1, 14))
        if first_is_no_improvement(values, case["start_from"], case["mode"]):
            continue  # the documented corner, tested on its own below
        theirs, ours = run_keras(model, case, values), run_highmark(case, values)
        detail = (case, values, theirs, ours)
        assert ours.stop == theirs.stop, detail
        assert same(ours.best, theirs.best), detail
        assert ours.wait == theirs.wait, detail
        compared += 1
        stopped += theirs.stop is not None
        with_baseline += case["baseline"] is not None and theirs.stop is not None
    # the sweep must exercise both outcomes and the baseline rule
    assert compared > CURVES * 0.9
    assert compared * 0.25 < stopped < compared * 0.9
    assert with_baseline > 50


def test_corner_nan_first_value_keras_makes_it_best_highmark_does_not(model: Any) -> None:
    case = {"mode": "min", "patience": 1, "min_delta": 0.0, "baseline": None, "start_from": 0}
    values = [NAN, 1.0, 0.5, 0.25]
    theirs, ours = run_keras(model, case, values), run_highmark(case, values)
    # Keras: NaN becomes the best, nothing compares better than NaN, so it stops at epoch 1
    assert math.isnan(theirs.best)
    assert theirs.stop == 1
    # highmark: NaN is no improvement, the curve improves afterwards, no stop
    assert ours.stop is None
    assert ours.best == 0.25


def test_corner_negative_min_delta_is_used_as_absolute_value_like_keras(model: Any) -> None:
    case = {"mode": "min", "patience": 1, "min_delta": -0.25, "baseline": None, "start_from": 0}
    values = [1.0, 0.875, 0.8]
    theirs, ours = run_keras(model, case, values), run_highmark(case, values)
    assert theirs.stop == ours.stop == 1
