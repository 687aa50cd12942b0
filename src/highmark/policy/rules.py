"""Stopping criteria: small stateful objects that say "stop now" and explain why.

Each criterion has ``update(metrics, step) -> bool``, a ``reason`` (a sentence, set when it
fires), ``reset()``, ``state_dict()``/``load_state_dict()`` and ``config()``. They compose with
:class:`AnyOf` and :class:`AllOf`; :class:`~highmark.policy.stopping.EarlyStopping` runs a fixed
set of them plus any extra ones you pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from highmark.errors import ConfigError
from highmark.policy.criterion import (
    OPT_NUM,
    Clock,
    Criterion,
    MonitorCriterion,
    check_state,
    finite_number,
)
from highmark.policy.monitor import Metrics, Monitor

__all__ = [
    "AllOf",
    "AnyOf",
    "Divergence",
    "MaxSteps",
    "NonFinite",
    "Threshold",
    "TimeBudget",
]


class Threshold(MonitorCriterion):
    """Stops as soon as the monitored value is strictly better than ``value``.

    >>> t = Threshold(0.1, monitor="val_loss")
    >>> t.update({"val_loss": 0.2}), t.update({"val_loss": 0.05})
    (False, True)
    """

    kind = "Threshold"

    def __init__(self, value: float, monitor: str | Monitor | None = None, mode: str | None = None):
        super().__init__(monitor, mode)
        self.value = finite_number(value, "Threshold value")

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
        self.seconds = finite_number(seconds, "TimeBudget seconds")
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
