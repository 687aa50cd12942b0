"""The callback's place in the trainer: Lightning's checkpoint and early-stopping callback."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

from highmark.integrations.lightning import HighmarkCallback
from highmark.store.runfiles import read_history

from .lightning_fit import WARNINGS, ex, fit

pytestmark = WARNINGS

CURVE = [6.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]  # best at epoch 1; patience 3 stops at epoch 4


class LogsAtTrainEpochEnd(ex.DigitsMLP):  # type: ignore[misc, name-defined]
    """Logs ``m``, one value of :data:`CURVE` per epoch, in the module's ``on_train_epoch_end``."""

    def on_train_epoch_end(self) -> None:
        self.log("m", CURVE[self.current_epoch])


def test_sees_a_metric_logged_in_the_modules_train_epoch_end_as_lightning_does(
    run_dir: str,
) -> None:
    ref = LightningEarlyStopping(monitor="m", patience=3, check_on_train_epoch_end=True)
    fit([ref], max_epochs=len(CURVE), model=LogsAtTrainEpochEnd())
    ours = HighmarkCallback(
        run_dir, monitor="m", mode="min", patience=3, check_on_train_epoch_end=True
    )
    fit([ours], max_epochs=len(CURVE), model=LogsAtTrainEpochEnd())
    assert ref.stopped_epoch == 4
    assert ours.stopper.stopped_step == ref.stopped_epoch
    assert [r["metrics"]["m"] for r in read_history(run_dir)] == CURVE[:5]


def test_is_the_trainers_checkpoint_and_early_stopping_callback(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=2)
    trainer = ex.make_trainer(60, [cb], enable_checkpointing=True)  # Lightning's default
    assert trainer.checkpoint_callbacks == [cb]  # no ModelCheckpoint of Lightning's is added
    assert trainer.early_stopping_callback is cb
