"""Prechelt's stopping criteria GL, PQ and UP ("Early Stopping — But When?", 1998).

Definitions, with ``t`` the evaluation count (1, 2, ...), ``E_va`` the monitored validation
error, ``E_tr`` the training error and a *strip* ``k`` consecutive evaluations ending at a
multiple of ``k``:

- ``E_opt(t) = min_{t' <= t} E_va(t')``
- ``GL(t) = 100 * (E_va(t) / E_opt(t) - 1)``; ``GL_alpha`` stops at the first t with GL > alpha.
- ``P_k(t) = 1000 * (sum_{t'=t-k+1..t} E_tr(t') / (k * min_{t'=t-k+1..t} E_tr(t')) - 1)``;
  ``PQ_alpha`` stops at the first strip end with ``GL(t) / P_k(t) > alpha``.
- ``UP_s`` stops at the strip end t when ``E_va`` increased at s successive strip ends
  (``E_va(t) > E_va(t - k)``, ``E_va(t - k) > E_va(t - 2k)``, ...).

The errors must be non-negative (losses, error rates); a Monitor in "max" mode is refused.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from highmark.errors import ConfigError
from highmark.policy.criterion import NUM, OPT_NUM, MonitorCriterion, check_state
from highmark.policy.monitor import Metrics, Monitor

__all__ = ["GeneralizationLoss", "ProgressQuotient", "SuccessiveIncreases"]

_NONE_STR = (str, type(None))


def generalization_loss(e_va: float, e_opt: float) -> float:
    """``GL = 100 * (E_va / E_opt - 1)`` (``inf`` when E_opt is 0 and E_va is not)."""
    if e_opt > 0:
        return 100.0 * (e_va / e_opt - 1.0)
    return 0.0 if e_va <= e_opt else math.inf


def training_progress(train: list[float]) -> float:
    """``P_k = 1000 * (sum(E_tr) / (k * min(E_tr)) - 1)`` over one strip of training errors."""
    low = min(train)
    if low > 0:
        return 1000.0 * (math.fsum(train) / (len(train) * low) - 1.0)
    return 0.0 if max(train) <= low else math.inf


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _alpha(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{what} alpha must be a number >= 0, got {value!r}")
    return float(value)


class _ErrorCriterion(MonitorCriterion):
    def __init__(self, monitor: str | Monitor | None) -> None:
        super().__init__(monitor, "min" if isinstance(monitor, str) else None)  # errors
        self._check_mode()
        self.e_opt = math.inf

    def bind(self, monitor: Monitor) -> None:
        """Adopts the stopper's Monitor (must be a "min" one: these are errors)."""
        super().bind(monitor)
        self._check_mode()

    def _check_mode(self) -> None:
        if self.monitor.mode != "min":
            raise ConfigError(f"{self.kind} works on errors: its monitor must be in 'min' mode")

    def _gl(self, e_va: float) -> float:
        if e_va < self.e_opt:
            self.e_opt = e_va
        return generalization_loss(e_va, self.e_opt)


class GeneralizationLoss(_ErrorCriterion):
    """Prechelt's ``GL_alpha``: stop when the validation error is > alpha % above its minimum.

    >>> gl = GeneralizationLoss(5)
    >>> [gl.update({"val_loss": v}) for v in (1.0, 0.8, 0.83, 0.85)]
    [False, False, False, True]
    >>> round(gl.gl, 2)
    6.25
    """

    kind = "GeneralizationLoss"

    def __init__(self, alpha: float, monitor: str | Monitor | None = None) -> None:
        super().__init__(monitor)
        self.alpha = _alpha(alpha, self.kind)
        self.gl: float | None = None

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; True when GL > alpha."""
        s = self._step(step)
        e_va = self.monitor.observe(metrics, s)
        self.gl = gl = self._gl(e_va)
        if gl > self.alpha:
            self.reason = (
                f"generalization loss GL = {gl:.4g} > {self.alpha:g} at step {s}: "
                f"{self.monitor.key} = {e_va:.6g} is {gl:.4g}% above its minimum {self.e_opt:.6g}."
            )
            return True
        return False

    def reset(self) -> None:
        """Forgets everything seen."""
        self.reason, self._count, self.e_opt, self.gl = None, 0, math.inf, None

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        return {**self._base_state(), "e_opt": self.e_opt, "gl": self.gl}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self._load_base(state)
        check_state(state, self.kind, {"e_opt": NUM, "gl": OPT_NUM})
        self.e_opt, self.gl = float(state["e_opt"]), state["gl"]

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {**self._base_config(), "alpha": self.alpha}


class ProgressQuotient(_ErrorCriterion):
    """Prechelt's ``PQ_alpha``: at strip ends, stop when ``GL / P_k > alpha``.

    Needs a metrics mapping holding both the validation key and ``train_monitor``.

    >>> pq = ProgressQuotient(0.5, strip=2)
    >>> rows = [(1.0, 0.5), (0.9, 0.4), (1.0, 0.39), (1.1, 0.385)]
    >>> [pq.update({"val_loss": v, "train_loss": t}) for v, t in rows]
    [False, False, False, True]
    """

    kind = "ProgressQuotient"

    def __init__(
        self,
        alpha: float,
        strip: int = 5,
        train_monitor: str = "train_loss",
        monitor: str | Monitor | None = None,
    ) -> None:
        super().__init__(monitor)
        self.alpha = _alpha(alpha, self.kind)
        self.strip = _positive_int(strip, f"{self.kind} strip")
        if not isinstance(train_monitor, str) or not train_monitor:
            raise ConfigError(f"train_monitor must be a metric name, got {train_monitor!r}")
        self.train_monitor = Monitor(train_monitor, "min")  # a training error, lower is better
        self._train: deque[float] = deque(maxlen=self.strip)
        self.gl: float | None = None
        self.pk: float | None = None
        self.pq: float | None = None

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; at strip ends, True when PQ > alpha."""
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"{self.kind} needs a metrics mapping with {self.monitor.key!r} and "
                f"{self.train_monitor.key!r}, got {type(metrics).__name__}"
            )
        s = self._step(step)
        e_va = self.monitor.observe(metrics, s)
        self._train.append(self.train_monitor.value(metrics))
        self.gl = gl = self._gl(e_va)
        if self._count % self.strip:
            return False
        self.pk = pk = training_progress(list(self._train))
        self.pq = pq = gl / pk if pk > 0 else (math.inf if gl > 0 else 0.0)
        if pq > self.alpha:
            self.reason = (
                f"progress quotient PQ = GL/P_{self.strip} = {gl:.4g}/{pk:.4g} = {pq:.4g} > "
                f"{self.alpha:g} at step {s}: {self.monitor.key} rises while "
                f"{self.train_monitor.key} barely falls."
            )
            return True
        return False

    def reset(self) -> None:
        """Forgets everything seen."""
        self.reason, self._count, self.e_opt = None, 0, math.inf
        self._train.clear()
        self.gl = self.pk = self.pq = None

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        extra = {"gl": self.gl, "pk": self.pk, "pq": self.pq}
        return {**self._base_state(), "e_opt": self.e_opt, "train": list(self._train), **extra}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self._load_base(state)
        types = {"e_opt": NUM, "train": list, "gl": OPT_NUM, "pk": OPT_NUM, "pq": OPT_NUM}
        check_state(state, self.kind, types)
        train = state["train"]
        if len(train) > self.strip or not all(isinstance(x, NUM) for x in train):
            raise ConfigError(f"{self.kind} state key 'train' must hold <= {self.strip} numbers")
        self.e_opt = float(state["e_opt"])
        self._train = deque((float(x) for x in train), maxlen=self.strip)
        self.gl, self.pk, self.pq = state["gl"], state["pk"], state["pq"]

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        extra = {"alpha": self.alpha, "strip": self.strip, "train_monitor": self.train_monitor.key}
        return {**self._base_config(), **extra}


class SuccessiveIncreases(_ErrorCriterion):
    """Prechelt's ``UP_s``: stop when the validation error rose at ``s`` successive strip ends.

    >>> up = SuccessiveIncreases(2, strip=1)
    >>> [up.update({"val_loss": v}) for v in (0.5, 0.4, 0.45, 0.47)]
    [False, False, False, True]
    """

    kind = "SuccessiveIncreases"

    def __init__(self, s: int, strip: int = 5, monitor: str | Monitor | None = None) -> None:
        super().__init__(monitor)
        self.s = _positive_int(s, f"{self.kind} s")
        self.strip = _positive_int(strip, f"{self.kind} strip")
        self.previous: float | None = None
        self.increases = 0

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; at strip ends, True after ``s`` successive increases."""
        step_ = self._step(step)
        e_va = self.monitor.observe(metrics, step_)
        if self._count % self.strip:
            return False
        previous, self.previous = self.previous, e_va
        self.increases = self.increases + 1 if previous is not None and e_va > previous else 0
        if self.increases >= self.s:
            self.reason = (
                f"{self.monitor.key} increased at {self.increases} successive strip ends "
                f"(strips of {self.strip} evaluations), now {e_va:.6g} at step {step_}."
            )
            return True
        return False

    def reset(self) -> None:
        """Forgets everything seen."""
        self.reason, self._count, self.previous, self.increases = None, 0, None, 0

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        return {**self._base_state(), "previous": self.previous, "increases": self.increases}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self._load_base(state)
        check_state(state, self.kind, {"previous": OPT_NUM, "increases": int})
        prev = state["previous"]
        self.previous, self.increases = (None if prev is None else float(prev)), state["increases"]

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {**self._base_config(), "s": self.s, "strip": self.strip}
