"""mode="auto" in the Keras callback: the compiled metric's own direction, as Keras settles it."""

from __future__ import annotations

from typing import Any

import keras  # conftest.py has set KERAS_BACKEND=torch
import pytest

from highmark.criteria import Threshold
from highmark.errors import ConfigError
from highmark.integrations.keras import HighmarkCallback
from highmark.store.runfiles import read_run_info

from .conftest import load_example

ex = load_example("keras_digits")

BUDGET = 12


def negative_crossentropy(y_true: Any, y_pred: Any) -> Any:
    return -keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)


class HigherIsBetter(keras.metrics.MeanMetricWrapper):  # type: ignore[misc]
    """A custom metric that declares its direction the way Keras' own metrics do."""

    def __init__(self, name: str) -> None:
        super().__init__(fn=negative_crossentropy, name=name)
        self._direction = "up"


def fit(callbacks: list[Any], epochs: int = BUDGET) -> Any:
    """The digits MLP on one-hot labels, compiled with built-in and custom metrics."""
    keras.utils.set_random_seed(0)
    x, y, xv, yv = ex.digits_arrays()
    model = ex.make_model()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.3, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[
            "accuracy",
            "hinge",
            HigherIsBetter("score"),
            HigherIsBetter("neg_error"),
            keras.metrics.MeanMetricWrapper(fn=negative_crossentropy, name="pseudo_auc"),
        ],
    )
    return model.fit(
        x,
        keras.utils.to_categorical(y, 10),
        validation_data=(xv, keras.utils.to_categorical(yv, 10)),
        epochs=epochs,
        batch_size=32,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("val_hinge", "min"),  # a built-in metric whose direction is "down"
        ("val_accuracy", "max"),
        ("val_score", "max"),  # custom, the name says nothing: only the metric knows
        ("val_neg_error", "max"),  # custom, the name says "error": the metric's direction wins
    ],
)
def test_auto_takes_the_compiled_metrics_direction_and_stops_where_keras_does(
    run_dir: str, monitor: str, mode: str
) -> None:
    ref = keras.callbacks.EarlyStopping(monitor=monitor, mode="auto", patience=3)
    fit([ref])
    ours = HighmarkCallback(run_dir, monitor=monitor, mode="auto", patience=3)
    fit([ours])
    assert ref.monitor_op is (keras.ops.greater if mode == "max" else keras.ops.less)
    assert ours.stopper.monitor.mode == mode
    assert ref.stopped_epoch > 0, "the reference must stop inside the budget for this test"
    assert ours.stopped_epoch == ref.stopped_epoch
    info = read_run_info(run_dir)
    assert info is not None
    assert info["mode"] == mode


def test_auto_with_a_name_keras_does_not_know_waits_for_fit(run_dir: str) -> None:
    HighmarkCallback(run_dir, monitor="val_margin", mode="auto", patience=3)


def test_auto_with_a_monitor_neither_keras_nor_the_name_knows_is_a_value_error_at_fit(
    run_dir: str,
) -> None:
    callback = HighmarkCallback(run_dir, monitor="val_margin", mode="auto", patience=3)
    with pytest.raises(ValueError, match=r"val_margin.*compiled metrics: .*score") as caught:
        fit([callback], epochs=1)
    assert isinstance(caught.value, ConfigError)
    assert read_run_info(run_dir) is None  # refused before anything was written


def test_auto_falls_back_to_the_name_for_a_custom_metric_without_a_direction(
    run_dir: str,
) -> None:
    keras_refuses = keras.callbacks.EarlyStopping(monitor="val_pseudo_auc", mode="auto")
    with pytest.raises(ValueError, match="automatically determine"):
        fit([keras_refuses], epochs=1)
    callback = HighmarkCallback(run_dir, monitor="val_pseudo_auc", mode="auto", patience=3)
    fit([callback], epochs=2)
    assert callback.stopper.monitor.mode == "max"  # "auc" names a metric to maximise


def test_an_unknown_mode_is_a_config_error_at_construction(run_dir: str) -> None:
    with pytest.raises(ConfigError, match="mode must be 'auto', 'min' or 'max'"):
        HighmarkCallback(run_dir, monitor="val_loss", mode="sideways")


def test_a_bad_option_with_auto_still_fails_at_construction(run_dir: str) -> None:
    with pytest.raises(ConfigError, match="patience"):
        HighmarkCallback(run_dir, monitor="val_margin", mode="auto", patience=-1)


def test_auto_binds_the_given_criteria_to_the_resolved_monitor(run_dir: str) -> None:
    # "val_score" says nothing, so the construction-time guess is min; the criterion must
    # follow the mode settled at fit (max), or it would stop at epoch 0 (-1.97 < -0.8).
    threshold = Threshold(-0.8)
    callback = HighmarkCallback(
        run_dir, monitor="val_score", mode="auto", patience=50, criteria=[threshold]
    )
    fit([callback])
    assert threshold.monitor is callback.stopper.monitor
    assert callback.stopper.monitor.mode == "max"
    assert callback.stopped_epoch == 4  # val_score -0.69: the first one above -0.8
