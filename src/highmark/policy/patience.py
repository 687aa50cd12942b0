"""The patience rule: stop when the monitored value stopped improving (Keras 3 / Lightning)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from highmark.errors import ConfigError
from highmark.policy.criterion import NUM, OPT_INT, MonitorCriterion, check_state, finite_number
from highmark.policy.monitor import Metrics, Monitor, as_monitor
from highmark.policy.smoothing import Smoothing

__all__ = ["UNITS", "Patience"]

UNITS = ("evaluations", "steps", "seconds")


class Patience(MonitorCriterion):
    """Stops when the monitored value has not improved for ``patience`` evaluations/steps/seconds.

    The rule of Keras 3 and Lightning: ``wait`` counts evaluations since the last improvement; an
    improvement that does not also beat ``baseline`` updates ``best`` but does not reset
    ``wait``; an evaluation that improves never stops; nothing stops at step 0.

    >>> p = Patience(2, monitor="val_loss")
    >>> [p.update({"val_loss": v}) for v in (1.0, 0.9, 0.95, 0.91)]
    [False, False, False, True]
    """

    kind = "Patience"

    def __init__(
        self,
        patience: float = 5,
        monitor: str | Monitor | None = None,
        mode: str | None = None,
        min_delta: float = 0.0,
        min_delta_mode: str = "abs",
        baseline: float | None = None,
        unit: str = "evaluations",
        clock: Callable[[], float] | None = None,
        smoothing: Smoothing | Mapping[str, Any] | None = None,
    ) -> None:
        own = mode not in (None, "auto") or min_delta != 0 or min_delta_mode != "abs" or smoothing
        built = as_monitor(monitor, mode, min_delta, min_delta_mode, smoothing)
        super().__init__(built)
        self._bound = monitor is not None or bool(own)
        if unit not in UNITS:
            raise ConfigError(f"patience unit must be one of {UNITS}, got {unit!r}")
        ok_type = (int, float) if unit == "seconds" else (int,)
        if isinstance(patience, bool) or not isinstance(patience, ok_type) or patience < 0:
            kind = "a number" if unit == "seconds" else "an int"
            raise ConfigError(f"patience must be {kind} >= 0, got {patience!r}")
        self.patience = patience
        self.unit = unit
        self.baseline = None if baseline is None else finite_number(baseline, "baseline")
        self.clock: Callable[[], float] = clock or time.monotonic
        self.reset()

    def reset(self) -> None:
        """Forgets everything seen."""
        self.best = self.monitor.initial_best
        self.best_step: int | None = None
        self.wait = 0
        self.reason = None
        self._count = 0
        self._ref_step: int | None = None
        self._ref_time = 0.0

    def now(self) -> float:
        """The clock reading used for ``unit="seconds"`` (0.0 for the other units)."""
        return self.clock() if self.unit == "seconds" else 0.0

    def record(self, current: float, step: int, now: float = 0.0) -> bool:
        """Counts one evaluation of ``current``; returns whether it improved on ``best``."""
        if self._ref_step is None:
            self._ref_step, self._ref_time = step, now
        self.wait += 1
        if self.monitor.is_improvement(current, self.best):
            self.best, self.best_step = current, step
            if self.baseline is None or self.monitor.is_improvement(current, self.baseline):
                self.restart(step, now)
            return True
        return False

    def restart(self, step: int, now: float = 0.0) -> None:
        """Restarts the wait (after an improvement, or an LR reduction)."""
        self.wait, self._ref_step, self._ref_time = 0, step, now

    def waited(self, step: int, now: float = 0.0) -> float:
        """How long since the last restart, in ``unit``."""
        if self.unit == "evaluations":
            return self.wait
        if self.unit == "steps":
            return step - (step if self._ref_step is None else self._ref_step)
        return now - self._ref_time

    def ran_out(self, step: int, now: float = 0.0) -> bool:
        """Whether patience is used up (never at step 0)."""
        return step > 0 and self.waited(step, now) >= self.patience

    def explain(self, step: int, now: float = 0.0) -> str:
        """A sentence saying why patience ran out."""
        waited = self.waited(step, now)
        amount = f"{waited:.1f}" if self.unit == "seconds" else f"{waited:g}"
        key = self.monitor.key
        best = (
            f"best {self.best:.6g} at step {self.best_step}" if self.best_step is not None else ""
        )
        beat = self.baseline is None or self.monitor.is_improvement(self.best, self.baseline)
        if self.best_step is not None and not beat:
            best += f", which never beat the baseline {self.baseline:g}"
        unit = self.unit if waited != 1 else self.unit[:-1]
        return f"{key} did not improve for {amount} {unit} (patience {self.patience:g})" + (
            f"; {best}." if best else "; no value improved on the start."
        )

    def check(self, current: float, step: int) -> bool:
        """Applies the rule to an already looked-up value."""
        now = self.now()
        if not self.record(current, step, now) and self.ran_out(step, now):
            self.reason = self.explain(step, now)
            return True
        return False

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Feeds one evaluation; True when patience ran out."""
        s = self._step(step)
        return self.check(self.monitor.observe(metrics, s), s)

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state (``waited_s`` keeps a seconds-clock going)."""
        return {
            **self._base_state(),
            "best": self.best,
            "best_step": self.best_step,
            "wait": self.wait,
            "ref_step": self._ref_step,
            "waited_s": self.clock() - self._ref_time if self.unit == "seconds" else 0.0,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; ConfigError names a bad key."""
        self._load_base(state)
        types = {"best": NUM, "best_step": OPT_INT, "wait": int, "ref_step": OPT_INT}
        check_state(state, self.kind, {**types, "waited_s": NUM})
        if state["wait"] < 0:
            raise ConfigError(f"{self.kind} state key 'wait' must be >= 0, got {state['wait']}")
        self.best, self.best_step = float(state["best"]), state["best_step"]
        self.wait, self._ref_step = state["wait"], state["ref_step"]
        self._ref_time = self.now() - float(state["waited_s"]) if self.unit == "seconds" else 0.0

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments."""
        return {
            **self._base_config(),
            "patience": self.patience,
            "min_delta": self.monitor.min_delta,
            "min_delta_mode": self.monitor.min_delta_mode,
            "baseline": self.baseline,
            "unit": self.unit,
        }
