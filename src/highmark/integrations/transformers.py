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
optimizer, scheduler, stopper and step count; the data order starts over); with
``resume_from_checkpoint`` the Trainer restores the rest and the stopper continues from the state
this callback left in that checkpoint (``ExportableState``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from highmark.errors import ConfigError
from highmark.integrations._common import (
    CallbackBase,
    CallbackSettings,
    monitor_default,
    require,
    scalar_metrics,
)
from highmark.integrations._stopper import StopperSpec
from highmark.store.index import CheckpointInfo

require("transformers", "4.40", "transformers")

import transformers.trainer_callback as _hf  # noqa: E402
from transformers import TrainerCallback, TrainerControl, TrainerState  # noqa: E402
from transformers import TrainingArguments as _Args  # noqa: E402

__all__ = ["HighmarkCallback"]

logger = logging.getLogger(__name__)

_PREFIX = "eval_"
_STATE = "_highmark_state"  # this callback's part of a Trainer checkpoint's stateful_callbacks
# transformers >= 4.41 saves the state of callbacks that are ExportableState in its checkpoints
_Exportable: type = getattr(_hf, "ExportableState", object)
# the EarlyStopping arguments a Trainer may rebuild this callback with (JSON, see state())
_REBUILT = (
    "min_delta",
    "min_delta_mode",
    "baseline",
    "start_from",
    "stopping_threshold",
    "divergence_threshold",
    "check_finite",
    "smoothing",
    "patience_unit",
)


def _eval_name(name: str) -> str:
    return name if name.startswith(_PREFIX) else _PREFIX + name


def _trainer_direction(args: _Args, monitor: str) -> str | None:
    """The direction the Trainer gives ``monitor``: ``greater_is_better`` when its
    ``metric_for_best_model`` is that metric, else None."""
    named = getattr(args, "metric_for_best_model", None)
    if not named or _eval_name(named) != _eval_name(monitor):
        return None
    greater = args.greater_is_better
    if greater is None:  # what TrainingArguments itself assumes
        greater = not named.endswith("loss")
    return "max" if greater else "min"


class HighmarkCallback(CallbackBase, TrainerCallback, _Exportable):  # type: ignore[misc]
    """A ``TrainerCallback`` that stops training by a highmark policy and keeps the best models.

    Takes the arguments of every ``HighmarkCallback`` (:class:`~highmark.integrations._common.
    CallbackBase`: Run's, with Run's defaults), but ``monitor`` defaults to ``"eval_loss"``, the
    Trainer's name of the validation loss. For the Trainer:

    * ``monitor`` is an evaluation metric; ``"loss"`` means ``"eval_loss"``.
    * ``mode="auto"`` is settled when training begins, from ``args.greater_is_better`` when
      ``args.metric_for_best_model`` is the monitored metric, else from the name
      (:func:`highmark.policy.monitor.infer_mode`); a ``ValueError``
      (:class:`~highmark.errors.ConfigError`) at ``train()`` when neither says.
    * ``patience`` counts evaluations.
    * ``async_save="deferred"``: the optimizer waits for the save's copy before its next step,
      and the model, when it holds buffers, before its next forward pass. Another callback that
      changes the weights in place between an evaluation and the next step must call
      ``callback.session.manager.fence()`` first, or that save is dropped with
      ``highmark.errors.StateChangedError``.

    The stopper's state travels in the Trainer's own checkpoints too (``ExportableState``):
    ``train(resume_from_checkpoint=...)`` continues it from that checkpoint's step. When the
    Trainer tracks no best of its own (no ``metric_for_best_model``), the callback keeps
    ``state.best_metric`` and ``best_model_checkpoint`` (the directory of highmark's best
    checkpoint) up to date.
    """

    __init__ = monitor_default("eval_loss")  # the shared signature, with the Trainer's name

    def _configure(self, settings: CallbackSettings, **own: Any) -> None:
        monitor = settings.monitor
        if settings.stopping is None and monitor != "epoch":
            monitor = _eval_name(monitor)
        self._spec = StopperSpec(
            monitor, settings.mode, settings.patience, settings.stopping, settings.options
        )
        self.session = settings.session("transformers", "step", self._spec.provisional)
        self._built = False
        self._training = False
        self.best_step: int | None = None

    def state(self) -> dict[str, Any]:
        """This callback in a Trainer checkpoint (``ExportableState``), as JSON.

        ``"attributes"`` holds the stopper's state, the run directory and the history length;
        ``"args"`` the arguments the Trainer rebuilds the callback with when
        ``restore_callback_states_from_checkpoint=True`` (criteria, an LR schedule and
        ``storage_options`` cannot travel there; see docs/integrations.md).
        """
        config = self.stopper.config()
        args = {"directory": self.session.directory, **self.settings.store()}
        args.update(monitor=config["monitor"], patience=config["patience"])
        args.update({key: config[key] for key in _REBUILT})
        args["mode"] = config["mode"] if self._built else self._spec.mode
        saved = {
            "directory": self.session.directory,
            "stopper": self.stopper.state_dict(),
            "history_records": self.session.records,
        }
        return {"args": args, "attributes": {_STATE: saved}}

    def on_train_begin(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._built:
            found = _trainer_direction(args, self._spec.monitor)
            known = f" (metric_for_best_model={args.metric_for_best_model!r})"
            self.session.stopper = self._spec.build(self._spec.resolve(found, "the Trainer", known))
            self._built = True
        self._training = True
        self.session.budget = state.max_steps
        if state.is_world_process_zero:
            evaluations = _evaluation_budget(args, state)
            if evaluations is not None:
                self.session.warn_patience_budget(evaluations, "evaluation")
            self.session.open()
            # deferred async saves only: the next step waits for the save's copy
            self.session.install_fences([kwargs["model"], kwargs.get("optimizer")])
        if state.global_step > 0:  # the Trainer resumed from its own checkpoint
            self._continue_trainer_checkpoint(args, state, control)
            return
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
        self._publish_best(args, state, self._run_best())
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
            info = self.session.save(step, saved, metrics, {"epoch": state.epoch})
            if info is not None and info.is_best:
                self._publish_best(args, state, info)
        if stop:
            control.should_training_stop = True

    def on_train_end(
        self, args: _Args, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = False
        best = self.session.end(kwargs["model"].load_state_dict)
        if best is not None:
            self.best_step = best

    # -- the Trainer's own checkpoints and best ------------------------------------------------
    def _continue_trainer_checkpoint(
        self, args: _Args, state: TrainerState, control: TrainerControl
    ) -> None:
        saved = self._saved_state(state)
        if saved is None:
            logger.warning(
                "%s: the Trainer checkpoint of step %d holds no state of this callback (saved "
                "without it, or by an older highmark); the stopper starts afresh",
                self.session.directory,
                state.global_step,
            )
            return
        records = saved.get("history_records", -1)
        self.session.continue_from(
            saved["stopper"], state.global_step, records if isinstance(records, int) else -1
        )
        self._publish_best(args, state, self._run_best())
        if self.stopper.should_stop:
            control.should_training_stop = True

    def _saved_state(self, state: TrainerState) -> Mapping[str, Any] | None:
        """This callback's part of the checkpoint the Trainer resumed from (matched by run)."""
        stored = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        for entry in stored if isinstance(stored, list) else [stored]:
            saved = entry.get("attributes", {}).get(_STATE) if isinstance(entry, dict) else None
            if isinstance(saved, dict) and saved.get("directory") == self.session.directory:
                if not isinstance(saved.get("stopper"), dict):
                    raise ConfigError(
                        f"the Trainer checkpoint's state of {type(self).__name__} for "
                        f"{self.session.directory} has no stopper state; resume without it"
                    )
                return saved
        return None

    def _run_best(self) -> CheckpointInfo | None:
        return None if self.session.manager is None else self.session.manager.best

    def _publish_best(self, args: _Args, state: TrainerState, best: CheckpointInfo | None) -> None:
        """Sets the Trainer's ``best_metric`` and ``best_model_checkpoint`` from highmark's best
        checkpoint, unless the Trainer ranks its own (``metric_for_best_model``).

        ``best_global_step`` stays the Trainer's: when set, the Trainer points
        ``best_model_checkpoint`` at its own folder of that step. With ``save_total_limit=1``
        the Trainer ends by deleting each of its checkpoints but ``best_model_checkpoint``, so
        that one stays unset there.
        """
        if best is None or args.metric_for_best_model is not None:
            return
        state.best_metric = best.metrics.get(self.stopper.monitor.key)
        if args.save_total_limit != 1:
            state.best_model_checkpoint = best.path


def _evaluation_budget(args: Any, state: Any) -> int | None:
    """How many evaluations the Trainer will run (None when it cannot tell)."""
    strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    if strategy == "epoch":
        return math.ceil(args.num_train_epochs) if args.max_steps <= 0 else None
    if strategy == "steps" and state.max_steps > 0:
        every = args.eval_steps or args.logging_steps
        if isinstance(every, float) and every < 1:  # a fraction of the training steps
            every = math.ceil(state.max_steps * every)
        return int(state.max_steps // max(int(every), 1)) if every else None
    return None
