"""Keras 3 callback: highmark early stopping, checkpointing and resume for ``model.fit``.

::

    from highmark.integrations.keras import HighmarkCallback

    callback = HighmarkCallback("runs/mlp", monitor="val_loss", patience=5)
    model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[callback])

The model ends ``fit`` on its best weights, also when the epoch budget runs out before the policy
stops (Keras' own ``EarlyStopping`` restores only after a stop). Weights and optimizer variables
are stored as numpy arrays keyed by position and variable name, like Keras'
own weight files. With ``resume=True`` the script run again continues after the last saved
epoch (``callback.initial_epoch`` tells which); a second ``fit`` on the same callback object
starts a new fit, as Keras does, written as its own run ``<directory>-fit2``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from highmark.errors import CheckpointError, ConfigError
from highmark.integrations._common import CallbackBase, CallbackSettings, require, scalar_metrics
from highmark.integrations._session import Session
from highmark.integrations._stopper import StopperSpec
from highmark.policy.stopping import EarlyStopping

require("keras", "3.0", "keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["HighmarkCallback"]

logger = logging.getLogger(__name__)


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


def _compiled_direction(model: Any, monitor: str) -> tuple[str | None, list[str]]:
    """The direction Keras gives ``monitor`` (as ``MonitorCallback._set_monitor_op`` reads it:
    ``loss`` names are ``min``, a compiled metric's ``_direction`` decides), and the metrics seen.
    """
    name = monitor.removeprefix("val_")
    found = "min" if name == "loss" else None
    metrics: list[Any] = []
    for metric in getattr(model, "metrics", None) or []:
        inner = getattr(metric, "metrics", None)  # CompileMetrics and MetricsList hold the rest
        metrics.extend(inner if isinstance(inner, list) else [metric])
    for metric in metrics:
        direction = getattr(metric, "_direction", None)
        if metric.name == name and direction in ("up", "down"):
            found = "max" if direction == "up" else "min"
    return found, [m.name for m in metrics]


class HighmarkCallback(CallbackBase, keras.callbacks.Callback):  # type: ignore[misc]
    """A Keras callback that stops ``fit`` by a highmark policy and keeps the right models.

    Takes the arguments of every ``HighmarkCallback`` (:class:`~highmark.integrations._common.
    CallbackBase`: Run's, with Run's defaults). For Keras:

    * ``mode="auto"`` is settled when ``fit`` begins, from the compiled metric's own direction
      (``hinge`` is ``min``, accuracies ``max``; ``loss`` names ``min``), else from the name
      (:func:`highmark.policy.monitor.infer_mode`); a ``ValueError``
      (:class:`~highmark.errors.ConfigError`) at ``fit`` when neither says.
    * ``patience`` counts epochs; ``keep_every`` keeps every n-th epoch.
    * ``async_save="deferred"`` is accepted and is the same as ``True`` here: the variables are
      snapshotted into numpy arrays before each save.
    * ``resume``: ``True``: the first ``fit`` continues the latest checkpoint of ``directory``
      (weights, optimizer variables, stopper, epoch), and each later ``fit`` on this object, as
      in Keras, starts afresh: the stopper is reset and that fit is written as its own run,
      ``<directory>-fit2``, ``-fit3``... (continued in turn when the script runs again).
      ``"always"``: every ``fit`` continues ``directory``. ``False``: a ``directory`` that holds
      checkpoints is a ``ConfigError``. A ``fit`` that raised is continued by the next one, as
      a new process would.
    """

    def _configure(self, settings: CallbackSettings, **own: Any) -> None:
        keras.callbacks.Callback.__init__(self)
        if settings.resume not in (True, False, "always"):
            raise ConfigError(f"resume must be True, False or 'always', got {settings.resume!r}")
        self._spec = StopperSpec(
            settings.monitor, settings.mode, settings.patience, settings.stopping, settings.options
        )
        self._fits_ended = 0
        self.session = self._session(self._next_directory(), self._spec.provisional)
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def _next_directory(self) -> str:
        directory = self.settings.directory
        if self._fits_ended == 0 or self.settings.resume == "always":
            return directory
        return f"{directory.rstrip('/')}-fit{self._fits_ended + 1}"

    def _session(self, directory: str, stopper: EarlyStopping) -> Session:
        return self.settings.session("keras", "epoch", stopper, directory)

    @property
    def directory(self) -> str:
        """The run directory of the current (or the last) ``fit``."""
        return self.session.directory

    @property
    def initial_epoch(self) -> int:
        """The epoch the next ``fit`` starts from: one after its run's latest checkpoint, else 0."""
        if not self.settings.resume:
            return 0
        directory = self._next_directory()
        session = self.session
        if directory != session.directory:
            session = self._session(directory, self.stopper)
        latest = session.latest()
        return 0 if latest is None else int(latest.metadata.get("epoch", latest.step)) + 1

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.session.manager is not None:  # the last fit raised: Keras called no on_train_end
            try:
                self.session.close("failed")
            except Exception as err:  # a save of the failed fit; its run goes on from the last
                logger.warning("%s: the failed fit's last save failed too: %s", self.directory, err)
        direction, seen = _compiled_direction(self.model, self._spec.monitor)
        known = f" (compiled metrics: {', '.join(seen) or 'none'})"
        stopper = self._spec.build(self._spec.resolve(direction, "Keras", known))
        self.session = self._session(self._next_directory(), stopper)
        self.best_epoch = self.stopped_epoch = None
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
        self._fits_ended += 1
        best = self.session.end(lambda saved: _assign(self.model.weights, saved, "model"))
        if best is not None:
            self.best_epoch = best
