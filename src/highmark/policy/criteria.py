"""Stopping criteria: small stateful objects that say "stop now" and explain why.

Each criterion has ``update(metrics, step) -> bool``, a ``reason`` (a sentence, set when it
fires), ``reset()``, ``state_dict()``/``load_state_dict()`` and ``config()``. They compose with
:class:`AnyOf` and :class:`AllOf`; :class:`~highmark.policy.stopping.EarlyStopping` runs a fixed
set of them plus any extra ones you pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from highmark.errors import ConfigError
from highmark.policy.monitor import Metrics, Monitor, as_monitor

__all__ = [
    "AllOf",
    "AnyOf",
    "Criterion",
    "Divergence",
    "MaxSteps",
    "NonFinite",
    "Threshold",
    "TimeBudget",
    "check_state",
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


class _MonitorCriterion:
    """Shared plumbing of criteria that read the monitored value."""

    kind: ClassVar[str] = ""
    reason: str | None

    def __init__(self, monitor: str | Monitor | None, mode: str | None = None) -> None:
        self._bound = monitor is not None or mode is not None  # else adopt the stopper's
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


class Threshold(_MonitorCriterion):
    """Stops as soon as the monitored value is strictly better than ``value``.

    >>> t = Threshold(0.1, monitor="val_loss")
    >>> t.update({"val_loss": 0.2}), t.update({"val_loss": 0.05})
    (False, True)
    """

    kind = "Threshold"

    def __init__(self, value: float, monitor: str | Monitor | None = None, mode: str | None = None):
        super().__init__(monitor, mode)
        self.value = _finite(value, "Threshold value")

    def check(self, current: float, step: int) -> bool:
        """Applies the rule to an already looked-up value."""
        if self.monitor.is_better(current, self.value):
            sign = "<" if self.monitor.mode == "min" else ">"
            self.reason = (
                f"{self.monitor.key} = {current:.6g} reached the stopping threshold "
                f"({sign} {self.value:g}) at step {step}."
            )
            return True
        return False

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; True when the threshold is reached."""
        s = self._step(step)
        return self.check(self.monitor.observe(metrics, s), s)

    def reset(self) -> None:
        """Forgets everything seen."""
        self.reason, self._count = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        return self._base_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self._load_base(state)

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {**self._base_config(), "value": self.value}


class Divergence(Threshold):
    """Stops as soon as the monitored value is strictly worse than ``value`` (it diverged).

    >>> d = Divergence(10.0, monitor="val_loss")
    >>> d.update({"val_loss": 10.0}), d.update({"val_loss": 12.5})
    (False, True)
    """

    kind = "Divergence"

    def check(self, current: float, step: int) -> bool:
        """Applies the rule to an already looked-up value."""
        if self.monitor.is_better(self.value, current):
            sign = ">" if self.monitor.mode == "min" else "<"
            self.reason = (
                f"{self.monitor.key} = {current:.6g} passed the divergence threshold "
                f"({sign} {self.value:g}) at step {step}; training is diverging."
            )
            return True
        return False


class NonFinite(Threshold):
    """Stops as soon as the monitored value is NaN or infinite.

    >>> n = NonFinite(monitor="loss")
    >>> n.update({"loss": 1.0}), n.update({"loss": float("nan")})
    (False, True)
    """

    kind = "NonFinite"

    def __init__(self, monitor: str | Monitor | None = None, mode: str | None = None) -> None:
        super().__init__(0.0, monitor, mode)

    def check(self, current: float, step: int) -> bool:
        """Applies the rule to an already looked-up value."""
        if not math.isfinite(current):
            self.reason = f"{self.monitor.key} = {current} is not finite at step {step}."
            return True
        return False

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return self._base_config()


class MaxSteps:
    """Stops once ``step >= n`` (``step`` as reported: the number of training steps done).

    >>> m = MaxSteps(3)
    >>> [m.update({}, step=s) for s in (1, 2, 3)]
    [False, False, True]
    """

    kind = "MaxSteps"

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"MaxSteps n must be an int >= 0, got {n!r}")
        self.n = n
        self.reason: str | None = None
        self._count = 0

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; True once the step budget is used."""
        if step is None:
            step = self._count
        self._count += 1
        if step >= self.n:
            self.reason = f"reached the step budget: step {step} >= {self.n}."
            return True
        return False

    def reset(self) -> None:
        """Forgets everything seen."""
        self.reason, self._count = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state."""
        return {"count": self._count, "reason": self.reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        check_state(state, self.kind, {"count": int, "reason": (str, type(None))})
        self._count, self.reason = state["count"], state["reason"]

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {"kind": self.kind, "n": self.n}


class TimeBudget:
    """Stops once ``seconds`` of wall time passed since the first update (or :meth:`start`).

    Args:
        seconds: The budget.
        clock: A callable returning seconds (default ``time.monotonic``); inject one in tests.

    >>> now = [0.0]
    >>> tb = TimeBudget(60, clock=lambda: now[0])
    >>> tb.update({}); now[0] = 61.0; tb.update({})
    False
    True
    """

    kind = "TimeBudget"

    def __init__(self, seconds: float, clock: Clock | None = None) -> None:
        self.seconds = _finite(seconds, "TimeBudget seconds")
        if self.seconds < 0:
            raise ConfigError(f"TimeBudget seconds must be >= 0, got {seconds!r}")
        self.clock: Clock = clock or time.monotonic
        self.reason: str | None = None
        self._start: float | None = None

    def start(self) -> None:
        """Starts the clock now (otherwise the first update starts it)."""
        self._start = self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds used so far."""
        return 0.0 if self._start is None else self.clock() - self._start

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; True once the budget is used up."""
        if self._start is None:
            self.start()
        elapsed = self.elapsed
        if elapsed >= self.seconds:
            self.reason = f"time budget of {self.seconds:g} s used up ({elapsed:.1f} s elapsed)."
            return True
        return False

    def reset(self) -> None:
        """Forgets everything seen; the next update restarts the clock."""
        self.reason, self._start = None, None

    def state_dict(self) -> dict[str, Any]:
        """Returns the elapsed time (a resumed run continues the same budget)."""
        return {"elapsed": None if self._start is None else self.elapsed, "reason": self.reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; the clock continues from the saved elapsed time."""
        check_state(state, self.kind, {"elapsed": OPT_NUM, "reason": (str, type(None))})
        elapsed = state["elapsed"]
        self._start = None if elapsed is None else self.clock() - float(elapsed)
        self.reason = state["reason"]

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {"kind": self.kind, "seconds": self.seconds}


class AnyOf:
    """Stops when any of its criteria says stop (every one is updated each time).

    >>> c = AnyOf(MaxSteps(5), Threshold(0.1, monitor="val_loss"))
    >>> c.update({"val_loss": 0.05}, step=1), c.reason
    (True, 'val_loss = 0.05 reached the stopping threshold (< 0.1) at step 1.')
    """

    kind = "AnyOf"
    _all = False

    def __init__(self, *criteria: Criterion) -> None:
        if not criteria:
            raise ConfigError(f"{self.kind} needs at least one criterion")
        for c in criteria:
            if not isinstance(c, Criterion):
                raise ConfigError(f"{self.kind}: {c!r} is not a Criterion")
        self.criteria = tuple(criteria)
        self.reason: str | None = None

    def bind(self, monitor: Monitor) -> None:
        """Passes the stopper's Monitor to children built without one."""
        for c in self.criteria:
            bind = getattr(c, "bind", None)
            if bind is not None:
                bind(monitor)

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation to every child; combines their answers."""
        fired = [c for c in self.criteria if c.update(metrics, step)]
        stop = len(fired) == len(self.criteria) if self._all else bool(fired)
        if stop:
            self.reason = (
                " and ".join(str(c.reason) for c in fired) if self._all else fired[0].reason
            )
        return stop

    def reset(self) -> None:
        """Resets every child."""
        self.reason = None
        for c in self.criteria:
            c.reset()

    def state_dict(self) -> dict[str, Any]:
        """Returns the children's states."""
        return {"criteria": [c.state_dict() for c in self.criteria], "reason": self.reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        check_state(state, self.kind, {"criteria": list, "reason": (str, type(None))})
        if len(state["criteria"]) != len(self.criteria):
            raise ConfigError(f"{self.kind} state key 'criteria' has the wrong length")
        for c, s in zip(self.criteria, state["criteria"], strict=True):
            c.load_state_dict(s)
        self.reason = state["reason"]

    def config(self) -> dict[str, Any]:
        """Returns the children's configs."""
        return {"kind": self.kind, "criteria": [c.config() for c in self.criteria]}


class AllOf(AnyOf):
    """Stops when all of its criteria say stop at the same evaluation.

    >>> c = AllOf(MaxSteps(2), Threshold(0.1, monitor="val_loss"))
    >>> c.update({"val_loss": 0.05}, step=1), c.update({"val_loss": 0.05}, step=2)
    (False, True)
    """

    kind = "AllOf"
    _all = True


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)
