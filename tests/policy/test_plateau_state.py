"""ReduceLROnPlateau.state_dict(): it carries its configuration and refuses another schedule's."""

from __future__ import annotations

import json
import math

import pytest
import torch

from highmark.errors import ConfigError
from highmark.policy.plateau import ReduceLROnPlateau

ARGS = {"mode": "max", "factor": 0.5, "patience": 2, "threshold": 0.01, "cooldown": 1}


def test_state_dict_carries_the_configuration_torchs_state_carries() -> None:
    ours = ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_acc", **ARGS).state_dict()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **ARGS).state_dict()
    config = ours["config"]
    for key in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps"):
        assert config[key] == theirs[key], key
    assert config["monitor"] == "val_acc"
    json.dumps(ours)


def test_a_min_mode_state_is_refused_by_a_max_mode_scheduler() -> None:
    saved = ReduceLROnPlateau(initial_lrs=[0.1], monitor="score", mode="min")
    saved.step(1.0)
    sched = ReduceLROnPlateau(initial_lrs=[0.1], monitor="score", mode="max")
    with pytest.raises(ConfigError, match=r"'config\.mode' is 'min'.*'max'"):
        sched.load_state_dict(saved.state_dict())
    assert sched.best == -math.inf  # nothing was loaded


def test_a_state_for_another_monitor_is_refused() -> None:
    saved = ReduceLROnPlateau(initial_lrs=[0.1], monitor="val_loss").state_dict()
    sched = ReduceLROnPlateau(initial_lrs=[0.1], monitor="train_loss")
    with pytest.raises(ConfigError, match=r"'config\.monitor' is 'val_loss'"):
        sched.load_state_dict(saved)


def test_a_state_saved_before_the_configuration_was_recorded_still_loads() -> None:
    old = {  # what ReduceLROnPlateau.state_dict() wrote until now (checkpoints on disk hold it)
        "best": 0.5,
        "num_bad_epochs": 1,
        "cooldown_counter": 0,
        "last_epoch": 3,
        "reductions": 1,
        "min_lrs": [0.0],
        "lrs": [0.01],
    }
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=1)
    sched.load_state_dict(old)
    assert (sched.best, sched.num_bad_epochs, sched.lrs) == (0.5, 1, [0.01])


def test_other_settings_are_the_loading_schedulers_own() -> None:
    saved = ReduceLROnPlateau(initial_lrs=[0.1], patience=5, factor=0.5)
    saved.step(1.0)
    sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=0, factor=0.1)
    sched.load_state_dict(saved.state_dict())
    assert (sched.patience, sched.factor, sched.best) == (0, 0.1, 1.0)
    assert sched.step(1.0)  # patience 0: the first bad evaluation reduces
    assert sched.lrs == [pytest.approx(0.01)]


def test_a_bad_config_value_in_the_state_is_named() -> None:
    state = ReduceLROnPlateau(initial_lrs=[0.1]).state_dict()
    state["config"] = "min"
    with pytest.raises(ConfigError, match="'config'"):
        ReduceLROnPlateau(initial_lrs=[0.1]).load_state_dict(state)
