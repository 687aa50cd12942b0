"""mode="auto", the default: the direction read from the metric's name, never guessed."""

from __future__ import annotations

import json

import pytest

from highmark.criteria import Patience, Threshold
from highmark.errors import ConfigError
from highmark.policy import monitor as monitor_module
from highmark.policy.monitor import Monitor, infer_mode
from highmark.policy.plateau import ReduceLROnPlateau
from highmark.policy.stopping import EarlyStopping

RISING = [0.5, 0.7, 0.9, 0.6, 0.55, 0.5]  # an accuracy: best 0.9 at step 2


@pytest.mark.parametrize(
    "key",
    [
        "val_acc",
        "val_accuracy",
        "auc",
        "val_f1",
        "precision",
        "recall",
        "val/mAP50",
        "iou",
        "dice",
        "r2_score",
        "bleu",
        "rouge1",
        "cosine_similarity",
        "eval_exact_match",
        "val_MulticlassAccuracy",
        "BinaryF1Score",
    ],
)
def test_accuracy_like_names_are_maximised(key: str) -> None:
    assert infer_mode(key) == "max"


@pytest.mark.parametrize(
    "key",
    [
        "val_loss",
        "loss",
        "eval_loss",
        "val_error",
        "mean_squared_error",
        "rmse",
        "kl_divergence",
        "perplexity",
        "eval_wer",
        "valLoss",
    ],
)
def test_loss_and_error_like_names_are_minimised(key: str) -> None:
    assert infer_mode(key) == "min"


@pytest.mark.parametrize("key", ["score", "val_metric", "lr", "epoch", "acc_minus_loss"])
def test_a_name_that_says_neither_or_both_is_not_classified(key: str) -> None:
    assert infer_mode(key) is None


def test_auto_is_the_default_of_monitor_and_early_stopping() -> None:
    assert Monitor("val_acc").mode == "max"
    assert EarlyStopping(monitor="val_acc").monitor.mode == "max"
    assert EarlyStopping().monitor.mode == "min"  # val_loss


def test_auto_keeps_the_best_accuracy_not_the_worst() -> None:
    # with the old default "min" this curve's "best" was 0.5 at step 0 and the run stopped at 2
    es = EarlyStopping(monitor="val_acc", patience=2)
    stops = [es.update({"val_acc": v}) for v in RISING]
    assert (es.best, es.best_step, stops.index(True)) == (0.9, 2, 4)


def test_auto_refuses_a_name_it_cannot_classify_and_asks_for_mode() -> None:
    with pytest.raises(ConfigError, match=r"'val_score'.*mode='min'.*mode='max'"):
        EarlyStopping(monitor="val_score")


def test_an_explicit_mode_overrides_the_name() -> None:
    assert EarlyStopping(monitor="val_acc", mode="min").monitor.mode == "min"
    assert EarlyStopping(monitor="val_score", mode="max").monitor.mode == "max"


def test_an_unknown_mode_is_refused_naming_auto_too() -> None:
    with pytest.raises(ConfigError, match="'min', 'max' or 'auto'"):
        monitor_module.resolve_mode("val_loss", "up")


def test_config_and_state_record_the_resolved_mode() -> None:
    es = EarlyStopping(monitor="val_acc")
    assert es.config()["mode"] == "max"
    assert es.state_dict()["config"]["mode"] == "max"
    assert Monitor("val_loss").config()["mode"] == "min"


def test_a_state_saved_with_resolved_max_loads_into_an_auto_stopper() -> None:
    saved = EarlyStopping(monitor="val_acc", mode="max", patience=2)
    for v in RISING[:4]:
        saved.update({"val_acc": v})
    loaded = EarlyStopping(monitor="val_acc", patience=2)  # auto -> max
    loaded.load_state_dict(json.loads(json.dumps(saved.state_dict())))
    assert (loaded.best, loaded.best_step, loaded.wait) == (0.9, 2, 1)
    assert loaded.update({"val_acc": 0.55}) == saved.update({"val_acc": 0.55}) is True


def test_with_a_monitor_object_auto_takes_its_mode() -> None:
    monitor = Monitor("val_score", mode="max")
    assert EarlyStopping(monitor=monitor).monitor is monitor
    assert EarlyStopping(monitor=monitor, mode="max").monitor.mode == "max"


def test_an_explicit_mode_that_contradicts_a_monitor_object_is_refused() -> None:
    # the old default "min" was ignored next to a Monitor object, so this passed silently
    with pytest.raises(ConfigError, match="conflicts"):
        EarlyStopping(monitor=Monitor("val_acc"), mode="min")


def test_plateau_resolves_auto_from_its_monitor_name() -> None:
    assert ReduceLROnPlateau(initial_lrs=[0.1]).mode == "min"  # val_loss: torch's default
    assert ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_acc").mode == "max"
    assert ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_acc", mode=None).mode == "max"
    assert ReduceLROnPlateau(initial_lrs=[0.1], monitor=Monitor("x", "max")).mode == "max"
    with pytest.raises(ConfigError, match="mode="):
        ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_score")


def test_plateau_config_records_the_resolved_mode() -> None:
    sched = ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_acc", mode="auto")
    assert sched.config()["mode"] == sched.state_dict()["config"]["mode"] == "max"


def test_criteria_given_an_accuracy_name_maximise_it() -> None:
    threshold = Threshold(0.9, monitor="val_acc")
    assert [threshold.update({"val_acc": v}) for v in (0.5, 0.95)] == [False, True]
    assert Patience(2, monitor="val_acc").monitor.mode == "max"


def test_criteria_given_mode_auto_without_a_monitor_adopt_the_stoppers() -> None:
    patience = Patience(1, mode="auto")
    es = EarlyStopping(monitor="val_acc", criteria=[patience])
    assert patience.monitor is es.monitor
