"""The protocol every stopping criterion follows and the plumbing criteria share.

:class:`Criterion` is what :class:`~highmark.policy.stopping.EarlyStopping` and the combinators
accept; :func:`check_state` validates a loaded state dict; :class:`MonitorCriterion` is the base
of the criteria that read the monitored value (Threshold, Patience, the Prechelt rules), and
:func:`finite_number` checks a numeric argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from highmark.errors import ConfigError
from highmark.policy.monitor import Metrics, Monitor, as_monitor

__all__ = [
    "NUM",
    "OPT_INT",
    "OPT_NUM",
    "Clock",
    "Criterion",
    "MonitorCriterion",
    "check_state",
    "finite_number",
]

Clock = Callable[[], float]


@runtime_checkable
class Criterion(Protocol):
    """What every stopping criterion provides."""

    reason: str | None

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; returns True when training should stop now."""
        ...

    def reset(self) -> None:
        """Forgets everything seen."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; ConfigError names a bad key."""
        ...

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments, with a ``"kind"`` key."""
        ...


def check_state(state: Any, owner: str, types: Mapping[str, Any]) -> None:
    """Validates a loaded state dict: a mapping holding ``types`` keys of the given types.

    Raises:
        ConfigError: naming ``owner`` and the missing or ill-typed key.
    """
    if not isinstance(state, Mapping):
        raise ConfigError(f"{owner} state must be a dict, got {type(state).__name__}")
    for key, kind in types.items():
        if key not in state:
            raise ConfigError(f"{owner} state misses key {key!r}")
        value = state[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _tuple(kind))
        if not ok:
            raise ConfigError(f"{owner} state key {key!r} has a bad value: {value!r:.80}")


def _tuple(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_INT = (int, type(None))


class MonitorCriterion:
    """Shared plumbing of criteria that read the monitored value."""

    kind: ClassVar[str] = ""
    reason: str | None

    def __init__(self, monitor: str | Monitor | None, mode: str | None = None) -> None:
        # built without a monitor or a mode of its own, it adopts the stopper's Monitor
        self._bound = monitor is not None or mode not in (None, "auto")
        self.monitor = as_monitor(monitor, mode)
        self.reason = None
        self._count = 0

    def bind(self, monitor: Monitor) -> None:
        """Adopts the stopper's Monitor when this criterion was built without one."""
        if not self._bound:
            self.monitor = monitor
            self._bound = True

    def _step(self, step: int | None) -> int:
        if step is None:
            step = self._count
        self._count += 1
        return step

    def _base_state(self) -> dict[str, Any]:
        return {"count": self._count, "reason": self.reason}

    def _load_base(self, state: Mapping[str, Any]) -> None:
        check_state(state, self.kind, {"count": int, "reason": (str, type(None))})
        self._count = state["count"]
        self.reason = state["reason"]

    def _base_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "monitor": self.monitor.key, "mode": self.monitor.mode}


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float; ConfigError naming ``what`` unless it is a finite int or float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)
