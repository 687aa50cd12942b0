"""A callback's stopping arguments, kept until the framework can tell the metric's direction.

Imports no framework. With ``mode="auto"`` a framework callback settles the direction when
training starts: first from what the framework knows (Keras: the compiled metric's own direction;
Hugging Face: ``metric_for_best_model`` with ``greater_is_better``), then from the metric's name
(:func:`highmark.policy.monitor.infer_mode`), and refuses with a :class:`ConfigError` (a
``ValueError``) when neither says. Only ``"min"`` or ``"max"`` ever reaches the stopper.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from highmark.errors import ConfigError
from highmark.integrations._common import make_stopper
from highmark.policy.monitor import infer_mode
from highmark.policy.stopping import EarlyStopping

__all__ = ["MODES", "StopperSpec"]

logger = logging.getLogger(__name__)

MODES = ("auto", "min", "max")


class StopperSpec:
    """The stopping arguments of one callback and the stoppers built from them.

    Every argument is checked at construction: :attr:`provisional` is built there with the
    direction the name implies (``"min"`` when it says nothing, or the ``lr_schedule``'s), so a
    bad option fails in the callback's ``__init__`` while an unknown name with ``mode="auto"``
    waits for the framework. With ``stopping=`` given, that object is the stopper of every fit.
    """

    def __init__(
        self,
        monitor: str,
        mode: str,
        patience: int,
        stopping: EarlyStopping | None,
        options: Mapping[str, Any],
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor if stopping is None else stopping.monitor.key
        self.mode = mode if stopping is None else stopping.monitor.mode
        self.patience = patience
        self.stopping = stopping
        self.options = dict(options)
        self._pristine = copy.deepcopy(self.options)  # for a rebuild after criteria were bound
        guess, source = mode, self.options
        if mode == "auto":  # the guess must not bind the given criteria to its Monitor
            schedule = self.options.get("lr_schedule")
            guess = getattr(schedule, "mode", None) or infer_mode(monitor) or "min"
            source = copy.deepcopy(self._pristine)
        self.provisional = make_stopper(monitor, guess, patience, stopping, source)
        self._current: EarlyStopping | None = None

    def resolve(self, framework: str | None, framework_name: str, known: str = "") -> str:
        """The direction to use: the given mode, else the framework's, else the name's.

        Args:
            framework: ``"min"``/``"max"`` when the framework knows the monitored metric's
                direction, else None.
            framework_name: the framework, for the error message.
            known: what the framework was asked (e.g. its compiled metrics), for the message.

        Raises:
            ConfigError: ``mode="auto"`` and neither the framework nor the name tells.
        """
        if self.mode != "auto":
            return self.mode
        found = framework or infer_mode(self.monitor)
        if found is not None:
            logger.info("mode='auto': %s is watched with mode=%r", self.monitor, found)
            return found
        raise ConfigError(
            f"mode='auto' cannot tell whether {self.monitor!r} should be minimised or maximised: "
            f"{framework_name} knows no direction for it{known} and its name says nothing; "
            "pass mode='min' or mode='max'"
        )

    def build(self, mode: str) -> EarlyStopping:
        """The stopper for a new fit with ``mode``, in its initial state.

        The first fit gets :attr:`provisional` when the mode was given, else a stopper built
        from the given options; a later fit gets the previous stopper reset (Keras resets its
        callbacks' state when a new ``fit`` begins), rebuilt only when the direction changed.
        A given ``stopping`` object is the stopper of every fit.
        """
        if self.stopping is not None:
            if self._current is not None:
                self.stopping.reset()
            self._current = self.stopping
            return self.stopping
        current = self._current
        if current is None:
            current = self.provisional if self.mode != "auto" else self._make(mode, self.options)
        elif current.monitor.mode == mode:
            current.reset()
        else:
            current = self._make(mode, copy.deepcopy(self._pristine))
        self._current = current
        return current

    def _make(self, mode: str, options: Mapping[str, Any]) -> EarlyStopping:
        return make_stopper(self.monitor, mode, self.patience, None, options)
