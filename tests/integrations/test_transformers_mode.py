"""mode="auto" in the Hugging Face callback: the Trainer's greater_is_better, else the name."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from highmark.errors import ConfigError
from highmark.integrations.transformers import HighmarkCallback
from highmark.store.runfiles import read_run_info

from .conftest import load_example

ex = load_example("transformers_tiny")


def margin(prediction: Any) -> dict[str, float]:
    """The right class's logit minus the other's (higher is better; the name says nothing)."""
    logits, labels = prediction.predictions, prediction.label_ids
    right = np.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return {"margin": float(np.mean(2 * right - logits.sum(axis=1)))}


def train(callback: HighmarkCallback, tmp_path: Path, **args: Any) -> Any:
    model = ex.make_model()
    out = str(tmp_path / "hf-out")
    trainer = ex.make_trainer(model, [callback], 8, out, compute_metrics=margin, **args)
    trainer.train()
    return trainer


@pytest.mark.parametrize(("greater", "mode"), [(True, "max"), (False, "min")])
def test_auto_takes_greater_is_better_for_the_metric_for_best_model(
    run_dir: str, tmp_path: Path, greater: bool, mode: str
) -> None:
    callback = HighmarkCallback(run_dir, monitor="margin", mode="auto", patience=2)
    train(callback, tmp_path, metric_for_best_model="margin", greater_is_better=greater)
    assert callback.stopper.monitor.mode == mode
    info = read_run_info(run_dir)
    assert info is not None
    assert info["mode"] == mode


def test_auto_ignores_greater_is_better_of_another_metric(run_dir: str, tmp_path: Path) -> None:
    callback = HighmarkCallback(run_dir, monitor="loss", mode="auto", patience=2)
    train(callback, tmp_path, metric_for_best_model="margin", greater_is_better=True)
    assert callback.stopper.monitor.mode == "min"  # eval_loss: the name says loss


def test_auto_with_a_metric_neither_the_trainer_nor_the_name_knows_is_a_value_error_at_train(
    run_dir: str, tmp_path: Path
) -> None:
    callback = HighmarkCallback(run_dir, monitor="margin", mode="auto", patience=2)
    with pytest.raises(ValueError, match=r"eval_margin.*metric_for_best_model=None") as caught:
        train(callback, tmp_path)
    assert isinstance(caught.value, ConfigError)
    assert read_run_info(run_dir) is None


def test_warns_when_patience_cannot_run_out_within_the_evaluations(
    run_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = HighmarkCallback(run_dir, monitor="loss", patience=2)  # 8 steps / 4: 2 evaluations
    with caplog.at_level(logging.WARNING, logger="highmark"):
        train(callback, tmp_path)
    assert "patience 2 >= 2 evaluations in the budget" in caplog.text


def test_no_patience_warning_when_patience_fits_the_evaluations(
    run_dir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = HighmarkCallback(run_dir, monitor="loss", patience=1)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        train(callback, tmp_path)
    assert "patience" not in caplog.text
