"""Monitor: metric lookup, the improvement rule, ranking, smoothing and its state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from highmark.errors import ConfigError, MetricNotFoundError
from highmark.policy.monitor import Monitor, as_monitor
from highmark.policy.smoothing import ExponentialMovingAverage, MovingAverage

INF = math.inf
NAN = math.nan


def test_value_passes_a_float_through() -> None:
    assert Monitor("val_loss").value(0.25) == 0.25


def test_value_looks_up_the_key_in_a_mapping() -> None:
    assert Monitor("acc").value({"loss": 1.0, "acc": 0.75}) == 0.75


def test_value_accepts_numpy_and_torch_scalars() -> None:
    m = Monitor("val_loss")
    assert m.value({"val_loss": np.float32(0.5)}) == 0.5
    assert m.value({"val_loss": np.int64(3)}) == 3.0
    assert m.value({"val_loss": torch.tensor(0.25)}) == 0.25
    assert type(m.value({"val_loss": torch.tensor([1.5])})) is float


def test_missing_key_raises_metric_not_found_listing_the_given_keys() -> None:
    with pytest.raises(MetricNotFoundError) as info:
        Monitor("val_loss").value({"loss": 1.0, "acc": 0.5})
    assert "'acc', 'loss'" in str(info.value)
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("bad", [True, "0.5", None, b"1", [1.0], {"a": 1}])
def test_non_numeric_value_raises_type_error_naming_the_key(bad: object) -> None:
    with pytest.raises(TypeError, match="val_loss"):
        Monitor("val_loss").value({"val_loss": bad})


def test_numpy_and_torch_booleans_raise_type_error() -> None:
    for bad in (np.bool_(True), torch.tensor(True)):
        with pytest.raises(TypeError, match="val_loss"):
            Monitor("val_loss").value({"val_loss": bad})


def test_multi_element_tensor_raises_type_error() -> None:
    with pytest.raises(TypeError, match="single number"):
        Monitor("val_loss").value({"val_loss": torch.ones(3)})


def test_initial_best_is_infinite_in_the_worst_direction() -> None:
    assert Monitor(mode="min").initial_best == INF
    assert Monitor(mode="max").initial_best == -INF


def test_abs_improvement_needs_more_than_min_delta() -> None:
    m = Monitor(mode="min", min_delta=0.25)
    assert m.is_improvement(0.5, 1.0)
    assert not m.is_improvement(0.75, 1.0)  # exactly min_delta better: a tie, not enough
    mx = Monitor(mode="max", min_delta=0.25)
    assert mx.is_improvement(1.5, 1.0)
    assert not mx.is_improvement(1.25, 1.0)


def test_negative_min_delta_is_used_as_its_absolute_value() -> None:
    assert Monitor(min_delta=-0.25).min_delta == 0.25
    assert not Monitor(min_delta=-0.25).is_improvement(0.9, 1.0)


def test_ties_are_not_improvements() -> None:
    assert not Monitor(mode="min").is_improvement(1.0, 1.0)
    assert not Monitor(mode="max").is_improvement(1.0, 1.0)


def test_nan_is_never_an_improvement() -> None:
    assert not Monitor(mode="min").is_improvement(NAN, INF)
    assert not Monitor(mode="max").is_improvement(NAN, -INF)
    assert not Monitor(mode="min", min_delta_mode="rel").is_improvement(NAN, 1.0)


def test_any_finite_value_improves_on_the_initial_best() -> None:
    for mode in ("min", "max"):
        for rel in ("abs", "rel"):
            m = Monitor(mode=mode, min_delta=0.5, min_delta_mode=rel)
            assert m.is_improvement(1e300, m.initial_best)
            assert m.is_improvement(-1e300, m.initial_best)
            assert not m.is_improvement(m.initial_best, m.initial_best)


def test_rel_improvement_is_a_fraction_of_best() -> None:
    m = Monitor(mode="min", min_delta=0.1, min_delta_mode="rel")
    assert m.is_improvement(8.9, 10.0)
    assert not m.is_improvement(9.0, 10.0)
    mx = Monitor(mode="max", min_delta=0.1, min_delta_mode="rel")
    assert mx.is_improvement(11.5, 10.0)
    assert not mx.is_improvement(11.0, 10.0)


def test_rel_improvement_is_sign_safe_for_negative_metrics() -> None:
    # torch/Ignite compute best * (1 - delta): for best=-1 that is -0.9, so -0.95 (worse) would
    # count as an improvement. Here an improvement must be better than best - delta*|best|.
    m = Monitor(mode="min", min_delta=0.1, min_delta_mode="rel")
    assert not m.is_improvement(-0.95, -1.0)
    assert not m.is_improvement(-1.05, -1.0)
    assert m.is_improvement(-1.2, -1.0)
    mx = Monitor(mode="max", min_delta=0.1, min_delta_mode="rel")
    assert not mx.is_improvement(-1.05, -1.0)
    assert not mx.is_improvement(-0.95, -1.0)
    assert mx.is_improvement(-0.8, -1.0)


def test_is_better_is_strict_and_ignores_min_delta() -> None:
    m = Monitor(mode="min", min_delta=5.0)
    assert m.is_better(0.9, 1.0)
    assert not m.is_better(1.0, 1.0)
    assert not m.is_better(NAN, 1.0)
    assert not m.is_better(1.0, NAN)
    assert Monitor(mode="max").is_better(2.0, 1.0)


def test_sort_key_orders_best_first_and_missing_last() -> None:
    values = [0.5, None, 0.1, NAN, 0.3]
    assert sorted(values, key=Monitor(mode="min").sort_key)[:3] == [0.1, 0.3, 0.5]
    assert sorted(values, key=Monitor(mode="max").sort_key)[:3] == [0.5, 0.3, 0.1]
    tail = sorted(values, key=Monitor(mode="min").sort_key)[3:]
    assert tail[0] is None or math.isnan(tail[0])


def test_moving_average_smooths_observed_values() -> None:
    m = Monitor(smoothing=MovingAverage(3))
    assert [m.observe(v) for v in (3.0, 6.0, 9.0, 0.0)] == [3.0, 4.5, 6.0, 5.0]


def test_ema_smooths_observed_values() -> None:
    m = Monitor(smoothing=ExponentialMovingAverage(0.25))
    assert [m.observe(v) for v in (4.0, 8.0, 0.0)] == [4.0, 5.0, 3.75]


def test_smoothing_passes_non_finite_values_through_unchanged() -> None:
    m = Monitor(smoothing=MovingAverage(2))
    m.observe(1.0)
    assert math.isnan(m.observe(NAN))
    assert m.observe(3.0) == 2.0  # the NaN did not enter the window


def test_value_does_not_feed_the_smoothing() -> None:
    m = Monitor(smoothing=MovingAverage(2))
    m.observe(1.0)
    assert m.value(5.0) == 5.0
    assert m.observe(3.0) == 2.0


def test_observe_twice_at_the_same_step_feeds_the_filter_once() -> None:
    m = Monitor(smoothing=MovingAverage(5))
    assert m.observe(2.0, step=0) == 2.0
    assert m.observe(4.0, step=1) == 3.0
    assert m.observe(4.0, step=1) == 3.0  # a second component sharing the Monitor
    assert m.observe(6.0, step=2) == 4.0


def test_smoothing_state_round_trips_through_json() -> None:
    for smoothing in (MovingAverage(3), ExponentialMovingAverage(0.5)):
        a = Monitor(smoothing=smoothing.config())
        for v in (1.0, 2.0, 7.0):
            a.observe(v)
        b = Monitor(smoothing=smoothing.config())
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        assert a.observe(4.0) == b.observe(4.0)


def test_load_state_dict_rejects_bad_smoothing_state() -> None:
    m = Monitor(smoothing=MovingAverage(2))
    with pytest.raises(ConfigError, match="values"):
        m.load_state_dict({"smoothing": {"values": [1.0, 2.0, 3.0]}})
    with pytest.raises(ConfigError, match="smoothing"):
        m.load_state_dict({})
    with pytest.raises(ConfigError, match="smoothing"):
        Monitor().load_state_dict({"smoothing": {"values": []}})


def test_config_round_trips_through_from_config() -> None:
    m = Monitor("acc", "max", 0.01, "rel", smoothing=ExponentialMovingAverage(0.3))
    config = json.loads(json.dumps(m.config()))
    assert Monitor.from_config(config).config() == m.config()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "up"}, "mode"),
        ({"min_delta_mode": "pct"}, "min_delta_mode"),
        ({"min_delta": NAN}, "min_delta"),
        ({"min_delta": "0.1"}, "min_delta"),
        ({"key": ""}, "key"),
        ({"smoothing": {"kind": "median"}}, "smoothing"),
        ({"smoothing": MovingAverage}, "smoothing"),
    ],
)
def test_construction_validates_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Monitor(**kwargs)  # type: ignore[arg-type]


def test_smoothing_arguments_are_validated() -> None:
    with pytest.raises(ConfigError):
        MovingAverage(0)
    with pytest.raises(ConfigError):
        ExponentialMovingAverage(0.0)
    with pytest.raises(ConfigError):
        ExponentialMovingAverage(1.5)


def test_as_monitor_refuses_arguments_that_conflict_with_a_monitor() -> None:
    shared = Monitor("acc", mode="max")
    assert as_monitor(shared) is shared
    assert as_monitor(shared, mode="max") is shared
    with pytest.raises(ConfigError, match="mode"):
        as_monitor(shared, mode="min")
    with pytest.raises(ConfigError, match="min_delta"):
        as_monitor(shared, min_delta=0.1)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
delta = st.floats(min_value=0.0, max_value=0.9)


@given(current=finite, best=finite, d=delta, mode=st.sampled_from(["min", "max"]))
def test_a_rel_improvement_is_always_strictly_better(
    current: float, best: float, d: float, mode: str
) -> None:
    m = Monitor(mode=mode, min_delta=d, min_delta_mode="rel")
    if m.is_improvement(current, best):
        assert m.is_better(current, best)


@given(current=finite, best=finite, d=delta, mode=st.sampled_from(["min", "max"]))
def test_an_abs_improvement_is_always_strictly_better(
    current: float, best: float, d: float, mode: str
) -> None:
    m = Monitor(mode=mode, min_delta=d)
    if m.is_improvement(current, best):
        assert m.is_better(current, best)
