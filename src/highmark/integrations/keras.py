"""Keras 3 callback: highmark early stopping, checkpointing and resume for ``model.fit``.

::

    from highmark.integrations.keras import HighmarkCallback

    callback = HighmarkCallback("runs/mlp", monitor="val_loss", patience=5)
    model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[callback])

The model ends ``fit`` on its best weights, also when the epoch budget runs out before the policy
stops (Keras' own ``EarlyStopping`` restores only after a stop). Weights and optimizer variables
are stored as numpy arrays keyed by position and variable name, like Keras'
own weight files. With ``resume=True`` a second ``fit`` on the
same directory continues after the last saved epoch; ``callback.initial_epoch`` tells which.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from highmark.errors import CheckpointError
from highmark.integrations._common import (
    CallbackBase,
    Session,
    make_stopper,
    require,
    scalar_metrics,
)
from highmark.policy.stopping import EarlyStopping
from highmark.run.defaults import DEFAULTS

require("keras", "3.0", "keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["HighmarkCallback"]


def _key(index: int, variable: Any) -> str:
    # Positional, like Keras' own weight files: variable paths carry auto-generated layer names
    # ("sequential_3/dense_7/kernel") that differ between two builds of the same model, so the
    # name is only for people reading the checkpoint; restore matches by position and shape.
    return f"{index:04d}-{variable.name}"


def _snapshot(variables: Sequence[Any]) -> dict[str, np.ndarray]:
    return {
        _key(i, v): np.array(keras.ops.convert_to_numpy(v.value)) for i, v in enumerate(variables)
    }


def _assign(variables: Sequence[Any], saved: Mapping[str, Any], where: str) -> None:
    ordered = sorted(saved.items(), key=lambda item: int(item[0].split("-", 1)[0]))
    if len(ordered) != len(variables):
        raise CheckpointError(
            f"{where}: the checkpoint holds {len(ordered)} variables, this model has "
            f"{len(variables)}"
        )
    for (key, value), variable in zip(ordered, variables, strict=True):
        array = np.asarray(value)
        if tuple(array.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{where}.{key}: saved shape {tuple(array.shape)} does not fit "
                f"{variable.path} {tuple(variable.shape)}"
            )
        variable.assign(array)


class HighmarkCallback(CallbackBase, keras.callbacks.Callback):  # type: ignore[misc]
    """A Keras callback that stops ``fit`` by a highmark policy and keeps the right models.

    Args:
        directory: run directory, a local path or an fsspec URL.
        monitor: the logged metric the policy watches (``"val_loss"``, ``"val_accuracy"``...).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the metric's name; a name that says
            neither is refused). Every default equals ``Run``'s (``highmark.run.defaults``).
        patience: epochs without improvement before stopping.
        stopping: a ready ``highmark.EarlyStopping`` instead of the three arguments above.
        keep_best: how many best checkpoints to keep (by ``monitor``).
        keep_last: how many latest checkpoints to keep.
        keep_every: also keep every n-th epoch for good.
        async_save: write checkpoints in a background thread. ``"deferred"`` is accepted and
            is the same here: the variables are snapshotted into numpy arrays before each save.
        restore_best: set the best weights on the model when ``fit`` ends, stopped or not.
        resume: continue from the latest checkpoint of ``directory`` (weights, optimizer
            variables, stopper, epoch).
        storage_options: passed to fsspec for URLs.
        **options: any other ``highmark.EarlyStopping`` argument (min_delta, baseline,
            start_from, ...).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        monitor: str = DEFAULTS.monitor,
        mode: str = DEFAULTS.mode,
        patience: int = DEFAULTS.patience,
        *,
        stopping: EarlyStopping | None = None,
        keep_best: int = DEFAULTS.keep_best,
        keep_last: int = DEFAULTS.keep_last,
        keep_every: int | None = DEFAULTS.keep_every,
        async_save: bool | str = DEFAULTS.async_save,
        restore_best: bool = DEFAULTS.restore_best,
        resume: bool = DEFAULTS.resume,
        storage_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.session = Session(
            directory,
            framework="keras",
            unit="epoch",
            stopper=make_stopper(monitor, mode, patience, stopping, options),
            keep_best=keep_best,
            keep_last=keep_last,
            keep_every=keep_every,
            async_save=async_save,
            restore_best=restore_best,
            resume=resume,
            storage_options=storage_options,
        )
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    @property
    def initial_epoch(self) -> int:
        """The epoch ``fit`` starts from on this run: one after the latest checkpoint, else 0."""
        if not self.session.resume:
            return 0
        latest = self.session.latest()
        return 0 if latest is None else int(latest.metadata.get("epoch", latest.step)) + 1

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.session.budget = self.params.get("epochs")
        self.session.open()
        resumed = self.session.resume_state()
        if resumed is None:
            return
        step, state = resumed
        _assign(self.model.weights, state["model"], "model")
        optimizer = self.model.optimizer
        if optimizer is not None and state.get("optimizer"):
            if not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            _assign(optimizer.variables, state["optimizer"], "optimizer")
        epoch = int(state.get("epoch", step)) + 1
        if self.stopper.should_stop:
            epoch = max(epoch, int(self.params.get("epochs") or epoch))
        self.model._initial_epoch = epoch  # what keras.callbacks.BackupAndRestore sets
        self.session.epochs_run = epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        metrics = scalar_metrics(logs or {})
        stop = self.session.evaluate(epoch, metrics, epoch=epoch)
        self.session.epochs_run = epoch + 1
        state: dict[str, Any] = {"model": _snapshot(self.model.weights), "epoch": epoch}
        optimizer = self.model.optimizer
        if optimizer is not None and optimizer.built:
            state["optimizer"] = _snapshot(optimizer.variables)
        self.session.save(epoch, state, metrics, {"epoch": epoch})
        if stop:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.model._initial_epoch = None
        best = self.session.end(lambda saved: _assign(self.model.weights, saved, "model"))
        if best is not None:
            self.best_epoch = best
