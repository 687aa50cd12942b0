"""Hugging Face ``Trainer`` callback: highmark early stopping and best-k checkpoints.

::

    from highmark.integrations.transformers import HighmarkCallback

    args = TrainingArguments(..., eval_strategy="steps", eval_steps=50, save_strategy="no")
    trainer = Trainer(model, args, ..., callbacks=[HighmarkCallback("runs/bert", patience=3)])
    trainer.train()   # stops by policy, ends on the best model

The policy watches the Trainer's evaluation metrics (``monitor="eval_loss"`` by default; a name
without the ``eval_`` prefix, like ``"accuracy"``, means ``"eval_accuracy"``). Checkpoints hold the
model, optimizer and scheduler state; the best one is never rotated away. Let the Trainer's own
saving off (``save_strategy="no"``) or keep it for data-exact resume: with ``resume=True`` and no
``resume_from_checkpoint``, training continues from the highmark run's latest checkpoint (model,
optimizer, scheduler, stopper and step count; the data order starts over).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from highmark.integrations._common import (
    CallbackBase,
    Session,
    make_stopper,
    require,
    scalar_metrics,
)
from highmark.policy.stopping import EarlyStopping
from highmark.run.defaults import DEFAULTS

require("transformers", "4.40", "transformers")

from transformers import TrainerCallback, TrainerControl, TrainerState  # noqa: E402
from transformers import TrainingArguments as _Args  # noqa: E402

__all__ = ["HighmarkCallback"]

_PREFIX = "eval_"


class HighmarkCallback(CallbackBase, TrainerCallback):  # type: ignore[misc]
    """A ``TrainerCallback`` that stops training by a highmark policy and keeps the best models.

    Args:
        directory: run directory, a local path or an fsspec URL.
        monitor: the evaluation metric the policy watches; ``"loss"`` means ``"eval_loss"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the metric's name; a name that says
            neither is refused). Every default equals ``Run``'s (``highmark.run.defaults``).
        patience: evaluations without improvement before stopping.
        stopping: a ready ``highmark.EarlyStopping`` instead of the three arguments above.
        keep_best: how many best checkpoints to keep (by ``monitor``).
        keep_last: how many latest checkpoints to keep.
        keep_every: also keep every checkpoint whose step is a multiple of this, for good.
        async_save: write checkpoints in a background thread (training waits only for a copy
            of the state into reused host buffers). ``"deferred"``: the copy runs in the
            background too; the optimizer waits for it before its next step, and the model,
            when it holds buffers, before its next forward pass. Another callback that changes
            the weights in place between an evaluation and the next step must call
            ``callback.session.manager.fence()`` first, or that save is dropped with
            ``highmark.errors.StateChangedError``.
        restore_best: load the best weights into the model when training ends.
        resume: continue from the run directory's latest checkpoint.
        storage_options: passed to fsspec for URLs.
        **options: any other ``highmark.EarlyStopping`` argument.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        monitor: str = "eval_loss",  # DEFAULTS.monitor with the Trainer's "eval_" prefix
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
        if stopping is None and not monitor.startswith(_PREFIX) and monitor != "epoch":
            monitor = _PREFIX + monitor
        self.session = Session(
            directory,
            framework="transformers",
            unit="step",
            stopper=make_stopper(monitor, mode, patience, stopping, options),
            keep_best=keep_best,
            keep_last=keep_last,
            keep_every=keep_every,
            async_save=async_save,
            restore_best=restore_best,
            resume=resume,
            storage_options=storage_options,
        )
        self._training = False
        self.best_step: int | None = None

    def on_train_begin(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = True
        self.session.budget = state.max_steps
        if state.is_world_process_zero:
            self.session.open()
            # deferred async saves only: the next step waits for the save's copy
            self.session.install_fences([kwargs["model"], kwargs.get("optimizer")])
        if state.global_step > 0:
            return  # the Trainer resumed from its own checkpoint (resume_from_checkpoint)
        resumed = self.session.resume_state()
        if resumed is None:
            return
        step, saved = resumed
        kwargs["model"].load_state_dict(saved["model"])
        if kwargs.get("optimizer") is not None and "optimizer" in saved:
            kwargs["optimizer"].load_state_dict(saved["optimizer"])
        if kwargs.get("lr_scheduler") is not None and "scheduler" in saved:
            kwargs["lr_scheduler"].load_state_dict(saved["scheduler"])
        state.global_step = step
        if self.stopper.should_stop:
            control.should_training_stop = True

    def on_step_begin(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.stopper.should_stop:
            control.should_training_stop = True

    def on_evaluate(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._training:
            return  # trainer.evaluate() outside train(): not part of the run
        metrics = scalar_metrics(kwargs.get("metrics") or {})
        key = self.stopper.monitor.key
        if key not in metrics and _PREFIX + key in metrics:
            metrics[key] = metrics[_PREFIX + key]
        step = state.global_step
        stop = self.session.evaluate(step, metrics, epoch=None)
        self.session.steps_run = step
        self.session.epochs_run = int(state.epoch or 0)
        if state.is_world_process_zero:
            saved: dict[str, Any] = {"model": kwargs["model"].state_dict()}
            if kwargs.get("optimizer") is not None:
                saved["optimizer"] = kwargs["optimizer"].state_dict()
            if kwargs.get("lr_scheduler") is not None:
                saved["scheduler"] = kwargs["lr_scheduler"].state_dict()
            self.session.save(step, saved, metrics, {"epoch": state.epoch})
        if stop:
            control.should_training_stop = True

    def on_train_end(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = False
        best = self.session.end(kwargs["model"].load_state_dict)
        if best is not None:
            self.best_step = best
