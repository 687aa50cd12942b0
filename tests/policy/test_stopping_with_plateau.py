"""EarlyStopping(lr_schedule=ReduceLROnPlateau(...)): reduce the rate first, stop after."""

from __future__ import annotations

import json

import pytest
import torch

from highmark import EarlyStopping, ReduceLROnPlateau
from highmark.criteria import StopCause
from highmark.errors import ConfigError


def flat_run(es: EarlyStopping, n: int = 30) -> int | None:
    for step in range(n):
        if es.update({"val_loss": 1.0}, step):
            return step
    return None


def test_each_lr_reduction_restarts_the_wait() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=1, factor=0.5, min_lr=0.025)
    es = EarlyStopping(patience=2, lr_schedule=sched)
    waits = []
    for step in range(5):
        es.update(1.0, step)
        waits.append(es.wait)
    # wait reached patience at step 2, but the rate was reduced there, so the wait restarted
    assert waits == [0, 1, 0, 1, 0]
    assert sched.reductions == 2


def test_stops_only_after_the_rates_reached_min_lr() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=1, factor=0.5, min_lr=0.025)
    es = EarlyStopping(patience=2, lr_schedule=sched)
    assert flat_run(es) == 6
    assert sched.lrs == [0.025]
    assert es.stop_cause is StopCause.PATIENCE_EXHAUSTED
    assert "reduced 2 times" in str(es.reason)


def test_stops_after_max_reductions() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=0, factor=0.5, max_reductions=3)
    es = EarlyStopping(patience=3, lr_schedule=sched)
    stop = flat_run(es)
    assert sched.reductions == 3
    assert stop == 6  # reductions at steps 1, 2, 3; then 3 evaluations of patience
    assert sched.lrs == [0.0125]


def test_without_an_lr_schedule_the_same_curve_stops_at_patience() -> None:
    assert flat_run(EarlyStopping(patience=2)) == 2


def test_a_slower_schedule_holds_the_stop_until_it_reduces() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=5, factor=0.1, min_lr=0.01)
    es = EarlyStopping(patience=1, lr_schedule=sched)
    # reduction at step 6 (patience 5 + 1) reaches min_lr; then one more flat evaluation
    assert flat_run(es) == 7


def test_thresholds_stop_at_once_even_with_an_lr_schedule() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=0)
    es = EarlyStopping(patience=5, divergence_threshold=10.0, lr_schedule=sched)
    es.update(1.0)
    assert es.update(11.0)
    assert es.stop_cause is StopCause.DIVERGENCE_THRESHOLD


def test_drives_a_real_torch_optimizer() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    es = EarlyStopping(lr_schedule=ReduceLROnPlateau(opt, patience=0, min_lr=1e-3), patience=1)
    for step, v in enumerate([1.0, 1.0, 1.0, 1.0]):
        es.update(v, step)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_state_round_trip_includes_the_schedule() -> None:
    def make() -> EarlyStopping:
        sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=1, factor=0.5, min_lr=0.01)
        return EarlyStopping(patience=2, lr_schedule=sched)

    a = make()
    for step in range(4):
        a.update(1.0, step)
    b = make()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.lr_schedule is not None
    assert a.lr_schedule is not None
    for step in range(4, 20):
        assert a.update(1.0, step) == b.update(1.0, step)
        assert a.lr_schedule.lrs == b.lr_schedule.lrs


def test_config_records_the_schedule() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=3, max_reductions=2)
    config = json.loads(json.dumps(EarlyStopping(lr_schedule=sched).config()))
    assert config["lr_schedule"]["patience"] == 3
    assert config["lr_schedule"]["max_reductions"] == 2


def test_a_schedule_with_the_other_mode_is_refused() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], mode="max")
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(mode="min", lr_schedule=sched)


def test_loading_a_state_without_the_schedule_is_refused() -> None:
    state = EarlyStopping().state_dict()
    es = EarlyStopping(lr_schedule=ReduceLROnPlateau(initial_lrs=[0.1]))
    with pytest.raises(ConfigError, match="lr_schedule"):
        es.load_state_dict(state)
