"""Run's defaults: mode="auto" from the metric's name, and a patience the budget can use."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import nudge

from highmark import CheckpointManager, EarlyStopping, Run
from highmark.errors import ConfigError

ACCURACY = [0.5, 0.7, 0.9, 0.6, 0.55, 0.5, 0.45]  # best 0.9 at epoch 2


def test_run_maximises_an_accuracy_by_default_and_ends_on_its_best_weights(
    tmp_path: Path, tiny: Any
) -> None:
    model, opt = tiny
    weights = {}
    with Run(tmp_path / "r", monitor="val_acc", patience=2, async_save=False) as run:
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs(len(ACCURACY)):
            nudge(model, opt)
            weights[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
            run.report(val_acc=ACCURACY[epoch])
    assert (run.best_step, run.best, run.stopping.stopped_step) == (2, 0.9, 4)
    assert all(torch.equal(v, weights[2][k]) for k, v in model.state_dict().items())
    with CheckpointManager(tmp_path / "r", read_only=True) as ckpt:
        assert ckpt.best is not None
        assert ckpt.best.step == 2


def test_run_refuses_a_metric_name_that_says_no_direction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'val_score'.*mode="):
        Run(tmp_path / "r", monitor="val_score")
    assert not (tmp_path / "r").exists()


def test_a_ready_stopper_goes_with_the_default_arguments(tmp_path: Path) -> None:
    es = EarlyStopping(monitor="val_acc", patience=3)
    with Run(tmp_path / "r", stopping=es) as run:
        assert run.stopping is es
    with pytest.raises(ConfigError, match="not both"):
        Run(tmp_path / "r2", stopping=es, mode="max")


def test_patience_the_budget_cannot_use_up_logs_a_warning(
    tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="highmark.run.core"),
        Run(tmp_path / "r", patience=5, async_save=False) as run,
    ):
        run.track(model=tiny[0])
        for epoch in run.epochs(5):
            run.report(val_loss=1.0 / (epoch + 1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "patience 5 >= max_epochs 5" in warnings[0]


def test_patience_smaller_than_the_budget_logs_nothing(
    tmp_path: Path, tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="highmark"),
        Run(tmp_path / "r", patience=4, async_save=False) as run,
    ):
        run.track(model=tiny[0])
        for epoch in run.epochs(5):
            run.report(val_loss=1.0 / (epoch + 1))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
