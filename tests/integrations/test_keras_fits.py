"""One Keras callback object over several ``fit`` calls: new fits, their runs, and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras  # conftest.py has set KERAS_BACKEND=torch
import pytest

from highmark.integrations.keras import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history, read_run_info

from .conftest import load_example

ex = load_example("keras_digits")

BUDGET = 12  # the digits curve (lr 0.3) bottoms out at epoch 4; patience 3 stops at epoch 7


class Fits:
    """One model and its data, fitted as many times as asked (the model carries on, as in Keras)."""

    def __init__(self) -> None:
        keras.utils.set_random_seed(0)
        self.x, self.y, self.xv, self.yv = ex.digits_arrays()
        self.model = ex.make_model()

    def fit(self, callbacks: list[Any], epochs: int = BUDGET) -> list[float]:
        history = self.model.fit(
            self.x,
            self.y,
            validation_data=(self.xv, self.yv),
            epochs=epochs,
            batch_size=32,
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )
        return list(history.history.get("val_loss", []))


class FailAtEpoch(keras.callbacks.Callback):  # type: ignore[misc]
    """Raises at the end of one epoch, as a crash or Ctrl-C in a notebook would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.epoch:
            raise RuntimeError(f"failed at epoch {epoch}")


def steps(directory: str | Path) -> list[int]:
    with CheckpointManager(directory, monitor="val_loss", read_only=True) as ckpt:
        return [c.step for c in ckpt.checkpoints()]


def test_a_second_fit_on_the_same_callback_trains_again_as_keras_does(run_dir: str) -> None:
    keras_way = Fits()
    ref = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    keras_way.fit([ref])
    ref_second = keras_way.fit([ref])
    ours_way = Fits()
    ours = HighmarkCallback(run_dir, monitor="val_loss", mode="min", patience=3)
    ours_way.fit([ours])
    second = ours_way.fit([ours])
    assert ref.stopped_epoch > 0, "the reference must stop inside its second fit for this test"
    assert len(second) == len(ref_second)
    assert ours.stopped_epoch == ref.stopped_epoch
    assert ours.stopper.best_step == ref.best_epoch


def test_a_second_fit_is_written_as_its_own_run_next_to_the_first(run_dir: str) -> None:
    fits = Fits()
    callback = HighmarkCallback(run_dir, monitor="val_loss", mode="min", patience=3)
    fits.fit([callback])
    first_steps, first_history = steps(run_dir), read_history(run_dir)
    second = fits.fit([callback])
    assert callback.directory == f"{run_dir}-fit2"
    assert steps(run_dir) == first_steps  # the first fit's run is untouched
    assert read_history(run_dir) == first_history
    assert [r["step"] for r in read_history(f"{run_dir}-fit2")] == list(range(len(second)))
    info = read_run_info(f"{run_dir}-fit2")
    assert info is not None
    assert info["best_step"] == callback.best_epoch


def test_running_the_script_again_continues_each_fit_in_its_own_run(tmp_path: Path) -> None:
    directory = str(tmp_path / "run")
    fits = Fits()
    first = HighmarkCallback(directory, monitor="val_loss", mode="min", patience=3)
    fits.fit([first])
    fits.fit([first], epochs=3)  # the second fit is cut short: 3 epochs of its run
    again = HighmarkCallback(directory, monitor="val_loss", mode="min", patience=3)
    assert fits.fit([again]) == []  # the first fit had stopped: it trains no further
    assert again.initial_epoch == 3
    fits.fit([again])  # the second fit goes on from its own run's epoch 3
    steps_run = [r["step"] for r in read_history(f"{directory}-fit2")]
    assert steps_run == list(range(len(steps_run)))
    assert len(steps_run) > 3


def test_resume_always_makes_every_fit_continue_the_same_run(run_dir: str) -> None:
    fits = Fits()
    callback = HighmarkCallback(
        run_dir, monitor="val_loss", mode="min", patience=3, resume="always"
    )
    fits.fit([callback], epochs=3)
    assert callback.initial_epoch == 3
    fits.fit([callback])
    assert callback.directory == run_dir
    assert [r["step"] for r in read_history(run_dir)] == list(range(callback.stopped_epoch + 1))
    assert not Path(f"{run_dir}-fit2").exists()


def test_a_fit_that_raised_is_continued_by_the_next_fit(run_dir: str) -> None:
    fits = Fits()
    callback = HighmarkCallback(run_dir, monitor="val_loss", mode="min", patience=3)
    with pytest.raises(RuntimeError, match="epoch 2"):
        fits.fit([callback, FailAtEpoch(2)])  # Keras calls no on_train_end after this
    fits.fit([callback])
    assert callback.directory == run_dir
    assert [r["step"] for r in read_history(run_dir)] == list(range(callback.stopped_epoch + 1))
    assert read_run_info(run_dir)["resumed"][0]["from_step"] == 2  # type: ignore[index]


def test_resume_must_be_a_bool_or_always(run_dir: str) -> None:
    with pytest.raises(ValueError, match="resume"):
        HighmarkCallback(run_dir, resume="sometimes")
