"""The Keras callback's end of fit with a damaged best checkpoint, and its patience warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras  # conftest.py has set KERAS_BACKEND=torch
import numpy as np
import pytest

from highmark.integrations.keras import HighmarkCallback

from .test_keras_callback import fit


def _damage_every_checkpoint(run_dir: str) -> None:
    for path in Path(run_dir).glob("step-*/*.safetensors"):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # the last byte of the last tensor
        path.write_bytes(bytes(data))


def test_a_damaged_best_checkpoint_leaves_the_last_weights_and_warns(
    run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    last: list[Any] = []

    def damage(logs: Any = None) -> None:  # runs before highmark's on_train_end
        last.extend(w.copy() for w in model_box[0].get_weights())
        _damage_every_checkpoint(run_dir)

    model_box: list[Any] = []
    cb = HighmarkCallback(run_dir, monitor="val_loss", patience=50, async_save=False)
    damager = keras.callbacks.LambdaCallback(on_train_end=damage)

    class Grab(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            model_box.append(self.model)

    with caplog.at_level(logging.WARNING, logger="highmark"):
        model, _ = fit([Grab(), damager, cb], 4)
    assert last, "the damaging callback ran"
    for now, before in zip(model.get_weights(), last, strict=True):
        np.testing.assert_array_equal(now, before)
    assert "cannot be restored, the model keeps its last weights" in caplog.text


def test_warns_when_patience_cannot_run_out_within_the_epochs(
    run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    cb = HighmarkCallback(run_dir, monitor="val_loss", patience=5)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        fit([cb], 3)
    assert "patience 5 >= max_epochs 3" in caplog.text


def test_no_patience_warning_when_patience_fits_the_epochs(
    run_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    cb = HighmarkCallback(run_dir, monitor="val_loss", patience=2)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        fit([cb], 3)
    assert "patience" not in caplog.text
