"""ReduceLROnPlateau: the same learning-rate sequence as torch's, without importing torch."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import torch

import highmark
from highmark.errors import ConfigError
from highmark.policy.monitor import Monitor
from highmark.policy.plateau import ReduceLROnPlateau

CURVES = 300


def sgd(lrs: list[float]) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups)


MODES = [(mode, tm) for mode in ("min", "max") for tm in ("rel", "abs")]
THRESHOLDS = [0.0, 1e-4, 0.05, 0.25, 1.0, 1.5, 3.0]  # >= 1: improving needs a 2x jump (rel)


def random_case(rng: random.Random, groups: int, mode: str, threshold_mode: str) -> dict[str, Any]:
    min_lr: Any = rng.choice([0.0, 1e-3, 0.01])
    if rng.random() < 0.4:
        min_lr = [rng.choice([0.0, 1e-4, 1e-3, 0.02]) for _ in range(groups)]
    return {
        "mode": mode,
        "factor": rng.choice([0.1, 0.5, 1 / 3, 0.9, 0.0]),
        "patience": rng.randint(0, 4),
        "threshold": rng.choice(THRESHOLDS),
        "threshold_mode": threshold_mode,
        "cooldown": rng.choice([0, 0, 1, 3]),
        "min_lr": min_lr,
        "eps": rng.choice([1e-8, 0.0, 1e-3]),
    }


def values_for(rng: random.Random, case: dict[str, Any], n: int) -> list[float]:
    value, out = rng.uniform(0.5, 2.0), []
    sigma = rng.choice([0.08, 0.08, 0.8])  # large jumps: thresholds >= 1 can be beaten too
    for _ in range(n):
        value *= math.exp(rng.gauss(0, sigma)) if rng.random() < 0.8 else 1.0  # some exact ties
        v = value if case["threshold_mode"] == "rel" else value - 1.5  # abs: negatives too
        out.append(math.nan if rng.random() < 0.03 else v)
    return out


@pytest.mark.parametrize(("mode", "threshold_mode"), MODES)
def test_same_lr_sequence_as_torch_on_generated_curves(mode: str, threshold_mode: str) -> None:
    rng = random.Random(f"{mode}-{threshold_mode}")
    reductions, big_thresholds = 0, 0
    for _ in range(CURVES):
        lrs = [rng.choice([1.0, 0.1, 0.05, 0.003]) for _ in range(rng.randint(1, 3))]
        case = random_case(rng, len(lrs), mode, threshold_mode)
        big_thresholds += case["threshold"] >= 1
        theirs_opt, ours_opt = sgd(lrs), sgd(lrs)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **case)
        ours = ReduceLROnPlateau(ours_opt, **case)
        seen: list[list[float]] = []
        by_setter = ReduceLROnPlateau(initial_lrs=lrs, setter=seen.append, **case)
        for value in values_for(rng, case, 30):
            theirs.step(value)
            reduced = ours.step(value)
            by_setter.step(value)
            expected = [g["lr"] for g in theirs_opt.param_groups]
            assert [g["lr"] for g in ours_opt.param_groups] == expected, (case, lrs)
            assert by_setter.lrs == expected, (case, lrs)
            assert ours.lrs == expected
            assert ours.best == theirs.best or (math.isnan(ours.best) and math.isnan(theirs.best))
            reductions += reduced
        if seen:
            assert seen[-1] == by_setter.lrs
    assert reductions > CURVES // 4
    assert big_thresholds > CURVES // 5


def test_max_mode_with_a_threshold_of_one_improves_from_the_start_as_torch() -> None:
    # the curve: torch keeps lr 0.1; -inf * (1 - 1) = NaN used to make nothing improve
    opt = sgd([0.1])
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", threshold=1.0, patience=1)
    ours = ReduceLROnPlateau(initial_lrs=[0.1], mode="max", threshold=1.0, patience=1)
    lrs = []
    for v in (1.0, 2.0, 3.0, 4.0):
        theirs.step(v)
        ours.step(v)
        lrs.append(ours.lrs[0])
    assert lrs == [0.1, 0.1, 0.1, 0.1] == [opt.param_groups[0]["lr"]] * 4
    assert ours.best == theirs.best == 3.0


def test_min_mode_with_a_rel_threshold_of_one_is_logged_as_unable_to_improve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="highmark.policy.plateau"):
        ReduceLROnPlateau(initial_lrs=[0.1], mode="min", threshold=1.0)
    assert "can ever improve" in caplog.text


def test_rel_threshold_is_sign_safe_unlike_torch() -> None:
    # torch: best=-1.0, -0.95 < -1.0 * (1 - 0.1) = -0.9 counts as better although it is worse
    opt = sgd([0.1])
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, threshold=0.1)
    ours = ReduceLROnPlateau(initial_lrs=[0.1], patience=0, threshold=0.1)
    for v in (-1.0, -0.95):
        theirs.step(v)
        ours.step(v)
    assert opt.param_groups[0]["lr"] == 0.1
    assert ours.lrs == [pytest.approx(0.01)]


def test_setter_receives_the_new_rates() -> None:
    seen: list[list[float]] = []
    sched = ReduceLROnPlateau(initial_lrs=[0.1, 0.2], patience=0, factor=0.5, setter=seen.append)
    sched.step(1.0)
    sched.step(1.0)
    assert seen == [[0.05, 0.1]]


def test_works_on_any_object_with_param_groups() -> None:
    class Holder:
        param_groups = [{"lr": 0.4}]  # noqa: RUF012

    holder = Holder()
    sched = ReduceLROnPlateau(holder, patience=0, factor=0.5)
    sched.step(1.0)
    sched.step(2.0)
    assert holder.param_groups[0]["lr"] == 0.2


def test_tensor_learning_rates_are_updated_in_place() -> None:
    lr = torch.tensor(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    sched.step(1.0)
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.05)  # a float32 tensor


def test_max_reductions_caps_the_number_of_reductions() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[1.0], patience=0, factor=0.5, max_reductions=2)
    for _ in range(10):
        sched.step(1.0)
    assert (sched.lrs, sched.reductions, sched.exhausted) == ([0.25], 2, True)


def test_exhausted_once_every_rate_reached_min_lr() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[1.0, 0.1], patience=0, factor=0.1, min_lr=[0.01, 0.01])
    states = []
    for _ in range(4):
        sched.step(1.0)
        states.append(sched.exhausted)
    assert states == [False, False, True, True]
    assert sched.lrs == [pytest.approx(0.01), pytest.approx(0.01)]


def test_looks_the_value_up_through_its_monitor() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[1.0], patience=0, monitor=Monitor("acc", mode="max"))
    assert sched.mode == "max"
    sched.step({"acc": 0.5})
    assert sched.step({"acc": 0.4, "loss": 3.0})


def test_state_round_trips_through_json() -> None:
    a = ReduceLROnPlateau(initial_lrs=[1.0], patience=1, cooldown=1, factor=0.5)
    curve = [1.0, 1.0, 1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.0]
    for v in curve[:4]:
        a.step(v)
    seen: list[list[float]] = []
    b = ReduceLROnPlateau(initial_lrs=[1.0], patience=1, cooldown=1, factor=0.5, setter=seen.append)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert seen == [a.lrs]
    for v in curve[4:]:
        assert a.step(v) == b.step(v)
        assert a.lrs == b.lrs


def test_is_exported_at_the_top_level() -> None:
    assert highmark.ReduceLROnPlateau is ReduceLROnPlateau


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor": 1.0}, "factor"),
        ({"factor": -0.1}, "factor"),
        ({"patience": -1}, "patience"),
        ({"cooldown": 1.5}, "cooldown"),
        ({"threshold": -1e-4}, "threshold"),
        ({"threshold_mode": "pct"}, "threshold_mode"),
        ({"min_lr": [0.0, 0.0]}, "min_lr"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"eps": math.nan}, "eps"),
        ({"max_reductions": -1}, "max_reductions"),
        ({"mode": "up"}, "mode"),
        ({"setter": 3}, "setter"),
        ({"initial_lrs": None}, "initial_lrs"),
        ({"initial_lrs": [-0.1]}, "initial_lrs"),
    ],
)
def test_construction_validates_arguments(kwargs: dict[str, Any], match: str) -> None:
    args = {"initial_lrs": [0.1], **kwargs}
    with pytest.raises(ConfigError, match=match):
        ReduceLROnPlateau(**args)


def test_an_optimizer_without_param_groups_is_refused() -> None:
    with pytest.raises(ConfigError, match="param_groups"):
        ReduceLROnPlateau(object())


def test_load_state_dict_names_the_bad_key() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1])
    state = sched.state_dict()
    state["lrs"] = [0.1, 0.2]
    with pytest.raises(ConfigError, match="'lrs'"):
        sched.load_state_dict(state)
    del state["num_bad_epochs"]
    with pytest.raises(ConfigError, match="'num_bad_epochs'"):
        sched.load_state_dict(state)
