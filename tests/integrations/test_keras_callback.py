"""The Keras 3 callback, with real Keras models (torch backend) on scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras  # conftest.py has set KERAS_BACKEND=torch
import numpy as np
import pytest

from highmark.errors import ConfigError
from highmark.integrations.keras import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history, read_run_info

from .conftest import load_example

ex = load_example("keras_digits")

BUDGET = 12  # the digits curve (lr 0.3) bottoms out at epoch 4; patience 3 stops at epoch 7


def fit(callbacks: list[Any], epochs: int) -> tuple[Any, Any]:
    keras.utils.set_random_seed(0)
    x, y, xv, yv = ex.digits_arrays()
    model = ex.make_model()
    history = model.fit(
        x,
        y,
        validation_data=(xv, yv),
        epochs=epochs,
        batch_size=32,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )
    return model, history


@pytest.mark.parametrize(("patience", "min_delta"), [(3, 0.0), (1, 0.05)])
def test_stops_at_the_same_epoch_as_keras_early_stopping(
    run_dir: str, patience: int, min_delta: float
) -> None:
    ref = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=patience, min_delta=min_delta
    )
    _, ref_history = fit([ref], BUDGET)
    ours = HighmarkCallback(
        run_dir, monitor="val_loss", mode="min", patience=patience, min_delta=min_delta
    )
    _, history = fit([ours], BUDGET)
    assert ref.stopped_epoch > 0, "the reference must stop inside the budget for this test"
    assert ours.stopped_epoch == ref.stopped_epoch
    assert len(history.history["val_loss"]) == len(ref_history.history["val_loss"])


def test_restores_the_best_weights_when_the_budget_ends_without_a_stop(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=50)
    model, history = fit([cb], 6)
    assert cb.stopped_epoch is None
    val = history.history["val_loss"]
    assert cb.best_epoch == int(np.argmin(val))
    assert cb.best_epoch != len(val) - 1, "the last epoch must not be the best for this test"
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        best = ckpt.restore("best", keys=["model"])["model"]
    saved = [best[k] for k in sorted(best)]
    for got, want in zip(model.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)


def test_writes_weights_and_optimizer_variables_as_numpy_arrays(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=3, keep_last=2)
    model, _ = fit([cb], 3)
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        latest = ckpt.restore("latest")
    assert len(latest["model"]) == len(model.weights)
    assert len(latest["optimizer"]) == len(model.optimizer.variables)
    assert all(isinstance(v, np.ndarray) for v in latest["optimizer"].values())
    assert latest["epoch"] == 2
    info = read_run_info(run_dir)
    assert info is not None
    assert info["framework"] == "keras"
    assert [r["epoch"] for r in read_history(run_dir)] == [0, 1, 2]


def test_resume_continues_after_the_last_epoch_like_an_uninterrupted_run(tmp_path: Path) -> None:
    full = HighmarkCallback(tmp_path / "full", patience=3)
    model_full, _ = fit([full], BUDGET)
    fit([HighmarkCallback(tmp_path / "split", patience=3)], 3)
    resumed = HighmarkCallback(tmp_path / "split", patience=3)
    assert resumed.initial_epoch == 3
    model, history = fit([resumed], BUDGET)
    assert len(history.history["val_loss"]) == full.stopped_epoch + 1 - 3
    assert resumed.stopped_epoch == full.stopped_epoch
    for got, want in zip(model.get_weights(), model_full.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    steps = [r["step"] for r in read_history(tmp_path / "split")]
    assert steps == list(range(full.stopped_epoch + 1))


def test_resumed_stopped_run_trains_no_further(run_dir: str) -> None:
    first = HighmarkCallback(run_dir, patience=3)
    fit([first], BUDGET)
    again = HighmarkCallback(run_dir, patience=3)
    _, history = fit([again], BUDGET)
    assert history.history.get("val_loss", []) == []
    assert again.best_epoch == first.best_epoch


def test_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    callback = ex.main(["--out", str(tmp_path / "ex"), "--epochs", "2", "--patience", "1"])
    assert callback.best_epoch is not None
    assert "highmark ls" in capsys.readouterr().out


def test_writes_to_an_fsspec_url(tmp_path: Path) -> None:
    url = f"memory://highmark-keras-{tmp_path.name}/run"
    cb = HighmarkCallback(url, patience=3, keep_best=1)
    fit([cb], 2)
    assert [r["step"] for r in read_history(url)] == [0, 1]
    with CheckpointManager(url, monitor="val_loss", read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == sorted({1, cb.best_epoch})


def test_resume_false_on_a_run_with_checkpoints_is_a_config_error(run_dir: str) -> None:
    fit([HighmarkCallback(run_dir, patience=3)], 1)
    with pytest.raises(ConfigError, match="resume=False"):
        fit([HighmarkCallback(run_dir, patience=3, resume=False)], 1)
