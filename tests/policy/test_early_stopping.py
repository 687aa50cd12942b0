"""EarlyStopping: the rules of issue 2, the check order, reasons, config and state."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

import pytest

import highmark
from highmark.criteria import GeneralizationLoss, MaxSteps, StopCause, Threshold
from highmark.errors import ConfigError, MetricNotFoundError
from highmark.policy.monitor import Monitor
from highmark.policy.smoothing import ExponentialMovingAverage, MovingAverage
from highmark.policy.stopping import EarlyStopping

NAN = math.nan
INF = math.inf


def stop_step(es: EarlyStopping, values: Sequence[float]) -> int | None:
    """Feeds values at steps 0, 1, ... and returns the step at which the stopper said stop."""
    for step, v in enumerate(values):
        if es.update({"val_loss": v}):
            return step
    return None


def test_is_exported_at_the_top_level() -> None:
    assert highmark.EarlyStopping is EarlyStopping
    assert highmark.Monitor is Monitor


def test_stops_after_patience_evaluations_without_improvement() -> None:
    es = EarlyStopping(patience=3)
    assert stop_step(es, [1.0, 0.5, 0.6, 0.7, 0.8, 0.9]) == 4
    assert (es.best, es.best_step, es.wait, es.stopped_step) == (0.5, 1, 3, 4)


def test_an_improvement_resets_wait() -> None:
    es = EarlyStopping(patience=2)
    assert stop_step(es, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85, 0.7]) is None
    assert es.wait == 0


def test_ties_are_not_improvements() -> None:
    es = EarlyStopping(patience=2)
    assert stop_step(es, [1.0, 1.0, 1.0]) == 2


def test_min_delta_is_required_to_count_as_improvement() -> None:
    es = EarlyStopping(patience=2, min_delta=0.125)
    assert stop_step(es, [1.0, 0.875, 0.9, 0.5]) == 2  # 0.875 is exactly min_delta better


def test_rel_min_delta_is_a_fraction_of_best() -> None:
    es = EarlyStopping(patience=1, min_delta=0.1, min_delta_mode="rel")
    assert stop_step(es, [10.0, 9.5]) == 1


def test_max_mode_improves_upwards() -> None:
    es = EarlyStopping(monitor="acc", mode="max", patience=1)
    assert not es.update({"acc": 0.5})
    assert not es.update({"acc": 0.6})
    assert es.update({"acc": 0.55})
    assert es.best == 0.6


def test_improvement_not_beating_baseline_keeps_counting_wait() -> None:
    es = EarlyStopping(patience=2, baseline=0.5)
    assert not es.update(1.0)
    assert not es.update(0.9)  # improves best, but not the baseline: wait stays counting
    assert (es.best, es.wait) == (0.9, 2)
    assert es.update(0.95)
    assert "baseline" in str(es.reason)


def test_improvement_beating_baseline_resets_wait() -> None:
    es = EarlyStopping(patience=2, baseline=0.5)
    assert stop_step(es, [1.0, 0.4, 0.45]) is None
    assert es.wait == 1


def test_patience_zero_stops_at_the_first_evaluation_without_improvement() -> None:
    es = EarlyStopping(patience=0)
    assert stop_step(es, [1.0, 0.9, 0.95]) == 2


def test_never_stops_at_step_zero_for_lack_of_improvement() -> None:
    es = EarlyStopping(patience=0, check_finite=False)
    assert not es.update(NAN, step=0)
    es = EarlyStopping(patience=0, baseline=0.1)
    assert not es.update(1.0, step=0)


def test_evaluations_before_start_from_are_ignored_entirely() -> None:
    es = EarlyStopping(patience=1, start_from=3, stopping_threshold=0.1)
    for v in (NAN, 0.01, 5.0):
        assert not es.update(v)
    assert (es.best, es.wait, es.n_updates) == (INF, 0, 3)
    assert not es.update(1.0)  # step 3 is the first one counted
    assert es.update(1.0)
    assert es.stopped_step == 4


def test_step_defaults_to_the_number_of_earlier_updates() -> None:
    es = EarlyStopping(patience=1)
    es.update(1.0)
    es.update(0.5)
    es.update(0.7)
    assert es.best_step == 1
    assert es.stopped_step == 2


def test_explicit_steps_are_recorded() -> None:
    es = EarlyStopping(patience=1)
    es.update(1.0, step=100)
    es.update(2.0, step=200)
    assert (es.best_step, es.stopped_step) == (100, 200)


def test_non_finite_value_stops_at_once() -> None:
    for bad in (NAN, INF, -INF):
        es = EarlyStopping(patience=10)
        assert stop_step(es, [1.0, bad]) == 1
        assert es.stop_cause is StopCause.NON_FINITE_METRIC
        assert "not finite" in str(es.reason)


def test_with_check_finite_false_nan_is_never_an_improvement() -> None:
    es = EarlyStopping(patience=2, check_finite=False)
    assert stop_step(es, [1.0, NAN, NAN]) == 2
    assert es.best == 1.0
    assert es.stop_cause is StopCause.PATIENCE_EXHAUSTED


def test_stopping_threshold_stops_when_strictly_better() -> None:
    es = EarlyStopping(patience=10, stopping_threshold=0.25)
    assert stop_step(es, [1.0, 0.25, 0.2]) == 2
    assert es.stop_cause is StopCause.STOPPING_THRESHOLD
    assert "stopping threshold" in str(es.reason)


def test_divergence_threshold_stops_when_strictly_worse() -> None:
    es = EarlyStopping(patience=10, divergence_threshold=5.0)
    assert stop_step(es, [1.0, 5.0, 5.5]) == 2
    assert es.stop_cause is StopCause.DIVERGENCE_THRESHOLD
    assert "diverg" in str(es.reason)


def test_thresholds_may_stop_at_step_zero() -> None:
    es = EarlyStopping(stopping_threshold=1.0)
    assert es.update(0.5, step=0)


def test_non_finite_is_checked_before_the_thresholds() -> None:
    es = EarlyStopping(divergence_threshold=5.0, check_finite=True)
    assert es.update(INF)
    assert es.stop_cause is StopCause.NON_FINITE_METRIC


def test_stopping_threshold_is_checked_before_divergence() -> None:
    # min mode: 0.1 is better than the stopping threshold and worse than a (silly) divergence one
    es = EarlyStopping(stopping_threshold=0.5, divergence_threshold=0.0)
    assert es.update(0.1)
    assert es.stop_cause is StopCause.STOPPING_THRESHOLD


def test_divergence_is_checked_before_patience() -> None:
    es = EarlyStopping(patience=0, divergence_threshold=2.0)
    es.update(1.0)
    assert es.update(3.0)
    assert es.stop_cause is StopCause.DIVERGENCE_THRESHOLD


def test_patience_is_checked_before_extra_criteria() -> None:
    es = EarlyStopping(patience=1, criteria=[MaxSteps(1)])
    es.update(1.0)
    assert es.update(1.0)
    assert es.stop_cause is StopCause.PATIENCE_EXHAUSTED


def test_extra_criterion_stops_with_its_reason() -> None:
    es = EarlyStopping(patience=10, criteria=[MaxSteps(2)])
    assert stop_step(es, [1.0, 0.9, 0.8]) == 2
    assert es.stop_cause is StopCause.CRITERION
    assert es.reason == "reached the step budget: step 2 >= 2."


def test_extra_criteria_without_monitor_adopt_the_stoppers() -> None:
    gl = GeneralizationLoss(10)
    es = EarlyStopping(monitor="val_err", criteria=[gl])
    assert gl.monitor is es.monitor
    assert not es.update({"val_err": 1.0})
    assert es.update({"val_err": 1.2})
    assert "generalization loss" in str(es.reason)


def test_extra_criteria_with_their_own_monitor_keep_it() -> None:
    t = Threshold(0.9, monitor="acc", mode="max")
    es = EarlyStopping(monitor="val_loss", criteria=[t])
    assert t.monitor.key == "acc"
    assert es.update({"val_loss": 1.0, "acc": 0.95})


def test_the_decision_is_final_once_stopped() -> None:
    es = EarlyStopping(patience=0)
    stop_step(es, [1.0, 2.0])
    assert es.update(0.1)
    assert (es.best, es.stopped_step, es.should_stop) == (1.0, 1, True)


def test_reset_starts_over() -> None:
    es = EarlyStopping(patience=0)
    stop_step(es, [1.0, 2.0])
    es.reset()
    assert (es.should_stop, es.best, es.n_updates, es.stop_cause) == (
        False,
        INF,
        0,
        StopCause.NOT_STOPPED,
    )


def test_reason_is_a_sentence_naming_metric_patience_and_best() -> None:
    es = EarlyStopping(patience=2)
    stop_step(es, [0.5, 0.6, 0.7])
    assert (
        es.reason == "val_loss did not improve for 2 evaluations (patience 2); best 0.5 at step 0."
    )


def test_reason_is_none_until_stopped() -> None:
    es = EarlyStopping()
    es.update(1.0)
    assert es.reason is None
    assert es.stop_cause is StopCause.NOT_STOPPED


def test_missing_metric_raises_metric_not_found() -> None:
    with pytest.raises(MetricNotFoundError, match="'loss'"):
        EarlyStopping().update({"loss": 1.0})


def test_non_numeric_metric_raises_type_error() -> None:
    with pytest.raises(TypeError, match="val_loss"):
        EarlyStopping().update({"val_loss": "0.3"})


def test_a_monitor_object_is_shared_not_copied() -> None:
    shared = Monitor("acc", mode="max", min_delta=0.01)
    es = EarlyStopping(monitor=shared)
    assert es.monitor is shared
    assert es.config()["mode"] == "max"


def test_a_conflicting_mode_next_to_a_monitor_object_is_refused() -> None:
    with pytest.raises(ConfigError, match="mode"):
        EarlyStopping(monitor=Monitor("acc", mode="min"), mode="max")


def test_smoothing_applies_to_the_monitored_value() -> None:
    es = EarlyStopping(patience=1, smoothing=MovingAverage(2))
    # raw 1.0, 0.5, 0.7 -> smoothed 1.0, 0.75, 0.6: still improving, no stop
    assert stop_step(es, [1.0, 0.5, 0.7]) is None
    assert es.best == pytest.approx(0.6)


def test_patience_in_steps_does_not_depend_on_the_evaluation_interval() -> None:
    for interval in (1, 5, 25):
        es = EarlyStopping(patience=100, patience_unit="steps")
        steps = range(0, 1000, interval)
        stop = next(s for s in steps if es.update(1.0 if s == 0 else 2.0, step=s))
        assert stop == 100
        assert "100 steps" in str(es.reason)


def test_patience_in_seconds_uses_the_clock() -> None:
    now = [0.0]
    es = EarlyStopping(patience=30.0, patience_unit="seconds", clock=lambda: now[0])
    es.update(1.0)
    now[0] = 29.0
    assert not es.update(2.0)
    now[0] = 30.5
    assert es.update(2.0)
    assert "30.5 seconds" in str(es.reason)


def test_seconds_patience_continues_after_load_state_dict() -> None:
    now = [100.0]
    a = EarlyStopping(patience=30.0, patience_unit="seconds", clock=lambda: now[0])
    a.update(1.0)
    now[0] = 120.0
    a.update(2.0)
    later = [5000.0]
    b = EarlyStopping(patience=30.0, patience_unit="seconds", clock=lambda: later[0])
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    later[0] = 5009.0
    assert not b.update(2.0)
    later[0] = 5011.0
    assert b.update(2.0)


def test_config_is_json_and_names_every_argument() -> None:
    es = EarlyStopping(
        monitor="acc",
        mode="max",
        patience=3,
        min_delta=0.5,
        baseline=0.2,
        start_from=2,
        stopping_threshold=0.99,
        divergence_threshold=0.01,
        check_finite=False,
        criteria=[MaxSteps(10)],
        smoothing=ExponentialMovingAverage(0.5),
    )
    config = json.loads(json.dumps(es.config()))
    assert config["monitor"] == "acc"
    assert config["criteria"] == [{"kind": "MaxSteps", "n": 10}]
    assert config["smoothing"] == {"kind": "ema", "alpha": 0.5}
    assert (config["patience"], config["baseline"], config["start_from"]) == (3, 0.2, 2)
    assert (config["stopping_threshold"], config["divergence_threshold"]) == (0.99, 0.01)
    assert config["check_finite"] is False


def curve(rng: random.Random, n: int) -> list[float]:
    pool = [NAN, INF] + [k / 8 for k in range(-4, 17)]
    return [rng.choice(pool) if rng.random() < 0.15 else rng.randint(0, 16) / 8 for _ in range(n)]


def decisions(es: EarlyStopping, values: Sequence[float], start: int) -> list[Any]:
    out = []
    for step in range(start, len(values)):
        out.append((es.update({"val_loss": values[step]}, step), es.best, es.wait, es.reason))
    return out


def make(seed: int) -> EarlyStopping:
    rng = random.Random(seed)
    return EarlyStopping(
        patience=rng.randint(0, 4),
        min_delta=rng.choice([0.0, 0.125]),
        baseline=rng.choice([None, 0.5]),
        start_from=rng.randint(0, 2),
        check_finite=rng.random() < 0.3,
        criteria=[GeneralizationLoss(40)],
        smoothing=rng.choice([None, MovingAverage(3)]),
    )


def test_load_state_dict_continues_with_identical_decisions() -> None:
    rng = random.Random(7)
    for seed in range(150):
        values = curve(rng, 14)
        cut = rng.randint(0, 13)
        whole = make(seed)
        expected = decisions(whole, values, 0)[cut:]
        first = make(seed)
        decisions(first, values[:cut], 0)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = make(seed)
        resumed.load_state_dict(state)
        assert decisions(resumed, values, cut) == expected, (seed, values, cut)


def test_state_dict_is_json_serialisable_with_inf_and_nan() -> None:
    es = EarlyStopping(check_finite=False)
    es.update(NAN)
    text = json.dumps(es.state_dict())
    assert "Infinity" in text
    assert "NaN" in text


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s.pop("patience"), "'patience'"),
        (lambda s: s.__setitem__("n_updates", "3"), "'n_updates'"),
        (lambda s: s.__setitem__("should_stop", 1), "'should_stop'"),
        (lambda s: s.__setitem__("stop_cause", "bored"), "'stop_cause'"),
        (lambda s: s.__setitem__("format", 2), "'format'"),
        (lambda s: s["config"].__setitem__("monitor", "acc"), "'config.monitor'"),
        (lambda s: s["patience"].__setitem__("wait", -1), "'wait'"),
        (lambda s: s["patience"].__setitem__("best", "low"), "'best'"),
        (lambda s: s.__setitem__("criteria", [{}]), "'criteria'"),
    ],
)
def test_load_state_dict_names_the_bad_key(change: Any, match: str) -> None:
    es = EarlyStopping()
    es.update(1.0)
    state = json.loads(json.dumps(es.state_dict()))
    change(state)
    with pytest.raises(ConfigError, match=match):
        EarlyStopping().load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "up"}, "mode"),
        ({"patience": -1}, "patience"),
        ({"patience": 2.5}, "patience"),
        ({"patience": True}, "patience"),
        ({"min_delta": NAN}, "min_delta"),
        ({"min_delta_mode": "pct"}, "min_delta_mode"),
        ({"baseline": INF}, "baseline"),
        ({"start_from": -1}, "start_from"),
        ({"stopping_threshold": NAN}, "Threshold"),
        ({"divergence_threshold": "high"}, "Threshold"),
        ({"check_finite": "yes"}, "check_finite"),
        ({"criteria": [object()]}, "Criterion"),
        ({"patience_unit": "epochs"}, "unit"),
        ({"lr_schedule": object()}, "lr_schedule"),
        ({"monitor": 3}, "monitor"),
    ],
)
def test_construction_validates_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EarlyStopping(**kwargs)


def test_continue_after_stop_keeps_the_best_and_restarts_patience() -> None:
    es = EarlyStopping(monitor="loss", patience=2)
    for step, value in enumerate([1.0, 0.5, 0.6, 0.7]):
        es.update({"loss": value}, step=step)
    assert es.should_stop
    es.continue_after_stop(4)
    assert (es.should_stop, es.stopped_step, es.reason, es.wait) == (False, None, None, 0)
    assert (es.best, es.best_step) == (0.5, 1)
    assert not es.update({"loss": 0.8}, step=4)
    assert es.update({"loss": 0.8}, step=5)
