"""Early stopping: :class:`EarlyStopping`, which runs its checks in a fixed order.

Check order at each evaluation (after ``start_from``): non-finite value -> stopping threshold ->
divergence threshold -> improvement/patience (with the LR schedule, if any) -> extra criteria.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from highmark.errors import ConfigError
from highmark.policy.criterion import OPT_INT, OPT_NUM, Criterion, check_state
from highmark.policy.monitor import Metrics, Monitor, as_monitor
from highmark.policy.patience import Patience
from highmark.policy.rules import Divergence, Threshold
from highmark.policy.smoothing import Smoothing

if TYPE_CHECKING:
    from highmark.policy.plateau import ReduceLROnPlateau

__all__ = ["EarlyStopping", "StopCause"]


class StopCause(str, Enum):
    """Why training stopped, machine-readable (names follow Lightning's EarlyStoppingReason)."""

    NOT_STOPPED = "not_stopped"
    NON_FINITE_METRIC = "non_finite_metric"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    PATIENCE_EXHAUSTED = "patience_exhausted"
    CRITERION = "criterion"


class EarlyStopping:
    """Decides when to stop training from the evaluations reported to :meth:`update`.

    The rules equal Keras 3's and Lightning's ``EarlyStopping`` (see docs/stopping.md for the two
    corners where those two disagree). Checks, in order, at each evaluation with
    ``step >= start_from``: a non-finite value (``check_finite``) stops at once; a value strictly
    better than ``stopping_threshold`` stops at once; one strictly worse than
    ``divergence_threshold`` stops at once; then patience; then the extra ``criteria``.

    Args:
        monitor: The metric key, or a :class:`Monitor` shared with other components.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default): the direction the metric's name
            says (``max`` for accuracy-like names such as acc, auc, f1, precision, recall, map,
            iou, dice, r2, bleu, rouge; ``min`` for losses and errors; see
            :func:`~highmark.policy.monitor.infer_mode`); a name it cannot classify raises
            ConfigError asking for ``mode``. With a Monitor object, ``"auto"`` takes its mode.
            :meth:`config` and :meth:`state_dict` record the resolved mode.
        patience: Evaluations (or steps/seconds, see ``patience_unit``) without improvement.
        min_delta: Smallest change counted as an improvement (absolute value used).
        min_delta_mode: ``"abs"`` or ``"rel"`` (a fraction of ``|best|``).
        baseline: An improvement resets the wait only if it also beats this value.
        start_from: Evaluations with ``step < start_from`` are ignored entirely (warm-up).
        stopping_threshold: Stop as soon as the value is strictly better than this.
        divergence_threshold: Stop as soon as the value is strictly worse than this.
        check_finite: Stop at once on NaN/inf; when False a NaN is simply never an improvement.
        criteria: Extra :class:`Criterion` objects, checked last; built without a monitor they
            adopt this one.
        lr_schedule: A :class:`ReduceLROnPlateau` fed each value; each LR reduction restarts the
            wait, and patience may stop training only once the schedule is exhausted.
        smoothing: Smoothing of the monitored value (MovingAverage, ExponentialMovingAverage).
        patience_unit: ``"evaluations"``, ``"steps"`` or ``"seconds"``.
        clock: Seconds clock for ``patience_unit="seconds"`` (default ``time.monotonic``).

    >>> es = EarlyStopping(monitor="val_loss", patience=2)
    >>> [es.update({"val_loss": v}) for v in (0.9, 0.7, 0.8, 0.75)]
    [False, False, False, True]
    >>> es.best, es.best_step, es.stopped_step, es.stop_cause.value
    (0.7, 1, 3, 'patience_exhausted')
    >>> es.reason
    'val_loss did not improve for 2 evaluations (patience 2); best 0.7 at step 1.'
    """

    def __init__(
        self,
        monitor: str | Monitor = "val_loss",
        mode: str = "auto",
        patience: float = 5,
        min_delta: float = 0.0,
        min_delta_mode: str = "abs",
        baseline: float | None = None,
        start_from: int = 0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = True,
        criteria: Sequence[Criterion] = (),
        lr_schedule: ReduceLROnPlateau | None = None,
        *,
        smoothing: Smoothing | Mapping[str, Any] | None = None,
        patience_unit: str = "evaluations",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = as_monitor(monitor, mode, min_delta, min_delta_mode, smoothing)
        self._patience = Patience(
            patience, self.monitor, baseline=baseline, unit=patience_unit, clock=clock
        )
        if isinstance(start_from, bool) or not isinstance(start_from, int) or start_from < 0:
            raise ConfigError(f"start_from must be an int >= 0, got {start_from!r}")
        if not isinstance(check_finite, bool):
            raise ConfigError(f"check_finite must be a bool, got {check_finite!r}")
        self.start_from = start_from
        self.check_finite = check_finite
        self._threshold = None
        if stopping_threshold is not None:
            self._threshold = Threshold(stopping_threshold, self.monitor)
        self._divergence = None
        if divergence_threshold is not None:
            self._divergence = Divergence(divergence_threshold, self.monitor)
        self.criteria = tuple(criteria)
        for c in self.criteria:
            if not isinstance(c, Criterion):
                raise ConfigError(f"criteria: {c!r} is not a Criterion")
            bind = getattr(c, "bind", None)
            if bind is not None:
                bind(self.monitor)
        if lr_schedule is not None:
            if not all(hasattr(lr_schedule, a) for a in ("step", "exhausted", "state_dict")):
                raise ConfigError(f"lr_schedule must be a ReduceLROnPlateau, got {lr_schedule!r}")
            if lr_schedule.mode != self.monitor.mode:
                raise ConfigError(
                    f"lr_schedule mode {lr_schedule.mode!r} differs from the monitor's "
                    f"{self.monitor.mode!r}"
                )
        self.lr_schedule = lr_schedule
        self.reset()

    def reset(self) -> None:
        """Forgets every evaluation (the criteria and the monitor's smoothing too)."""
        self.monitor.reset()
        self._patience.reset()
        for c in self.criteria:
            c.reset()
        self.n_updates = 0
        self.should_stop = False
        self.stopped_step: int | None = None
        self.stop_cause = StopCause.NOT_STOPPED
        self.reason: str | None = None
        self.last_value: float | None = None

    def continue_after_stop(self, step: int) -> None:
        """Clears a stop decision on purpose and restarts patience at ``step``.

        For continuing a run that had stopped, with a larger budget or a changed policy: the
        best value and step are kept, the wait starts again from zero.
        """
        p = self._patience
        self.should_stop = False
        self.stopped_step = None
        self.stop_cause = StopCause.NOT_STOPPED
        self.reason = None
        p.restart(step, p.clock() if p.unit == "seconds" else 0.0)

    @property
    def patience(self) -> float:
        """The patience, in ``patience_unit``."""
        return self._patience.patience

    @property
    def patience_unit(self) -> str:
        """What ``patience`` counts: ``"evaluations"``, ``"steps"`` or ``"seconds"``."""
        return self._patience.unit

    @property
    def best(self) -> float:
        """The best monitored value so far (``+inf``/``-inf`` before any)."""
        return self._patience.best

    @property
    def best_step(self) -> int | None:
        """The step of :attr:`best` (None before any improvement)."""
        return self._patience.best_step

    @property
    def wait(self) -> int:
        """Evaluations since the last improvement (or LR reduction)."""
        return self._patience.wait

    def update(self, metrics: Metrics, step: int | None = None) -> bool:
        """Reports one evaluation; returns True when training should stop.

        Args:
            metrics: A float, or a mapping holding the monitored key.
            step: The evaluation's step; defaults to the number of earlier updates.

        Raises:
            MetricNotFoundError: the monitored key is missing (lists the given keys).
            TypeError: the monitored value is not a number.
        """
        if step is None:
            step = self.n_updates
        self.n_updates += 1
        if self.should_stop:
            return True
        if step < self.start_from:
            return False
        monitor = self.monitor
        if monitor.smoothing is None:
            current = monitor.value(metrics)
        else:
            current = monitor.observe(metrics, step)
        self.last_value = current
        if self.check_finite and not math.isfinite(current):
            why = f"{self.monitor.key} = {current} is not finite at step {step}."
            return self._stop(step, StopCause.NON_FINITE_METRIC, why)
        if self._threshold is not None and self._threshold.check(current, step):
            return self._stop(step, StopCause.STOPPING_THRESHOLD, self._threshold.reason)
        if self._divergence is not None and self._divergence.check(current, step):
            return self._stop(step, StopCause.DIVERGENCE_THRESHOLD, self._divergence.reason)
        p = self._patience
        now = p.clock() if p.unit == "seconds" else 0.0
        improved = p.record(current, step, now)
        lr = self.lr_schedule
        if lr is not None and lr.step(current):
            p.restart(step, now)
        if (
            not improved
            and step > 0
            and (p.wait >= p.patience if p.unit == "evaluations" else p.ran_out(step, now))
            and (lr is None or lr.exhausted)
        ):
            why = p.explain(step, now)
            if lr is not None:
                why += f" The learning rate was already reduced {lr.reductions} times."
            return self._stop(step, StopCause.PATIENCE_EXHAUSTED, why)
        for c in self.criteria:
            if c.update(metrics, step):
                return self._stop(step, StopCause.CRITERION, c.reason)
        return False

    def _stop(self, step: int, cause: StopCause, reason: str | None) -> bool:
        self.should_stop, self.stopped_step, self.stop_cause = True, step, cause
        self.reason = reason or f"stopped at step {step} ({cause.value})."
        return True

    def config(self) -> dict[str, Any]:
        """Returns the constructor arguments as JSON (recorded by Run and the CLI)."""
        p = self._patience
        return {
            "monitor": self.monitor.key,
            "mode": self.monitor.mode,
            "patience": p.patience,
            "min_delta": self.monitor.min_delta,
            "min_delta_mode": self.monitor.min_delta_mode,
            "baseline": p.baseline,
            "start_from": self.start_from,
            "stopping_threshold": None if self._threshold is None else self._threshold.value,
            "divergence_threshold": None if self._divergence is None else self._divergence.value,
            "check_finite": self.check_finite,
            "criteria": [c.config() for c in self.criteria],
            "lr_schedule": None if self.lr_schedule is None else self.lr_schedule.config(),
            "smoothing": self.monitor.config()["smoothing"],
            "patience_unit": p.unit,
        }

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state; :meth:`load_state_dict` continues identically."""
        return {
            "format": 1,
            "config": self.config(),
            "n_updates": self.n_updates,
            "should_stop": self.should_stop,
            "stopped_step": self.stopped_step,
            "stop_cause": self.stop_cause.value,
            "reason": self.reason,
            "last_value": self.last_value,
            "monitor": self.monitor.state_dict(),
            "patience": self._patience.state_dict(),
            "criteria": [c.state_dict() for c in self.criteria],
            "lr_schedule": None if self.lr_schedule is None else self.lr_schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output, validating it.

        Raises:
            ConfigError: naming the missing or bad key, or when the saved monitor key/mode differ
                from this stopper's (its ``best`` would mean something else).
        """
        types = {
            "format": int,
            "config": Mapping,
            "n_updates": int,
            "should_stop": bool,
            "stopped_step": OPT_INT,
            "stop_cause": str,
            "reason": (str, type(None)),
            "last_value": OPT_NUM,
            "monitor": Mapping,
            "patience": Mapping,
            "criteria": list,
        }
        check_state(state, "EarlyStopping", types)
        if state["format"] != 1:
            raise ConfigError(f"EarlyStopping state key 'format' is {state['format']!r}, not 1")
        saved = state["config"]
        for key in ("monitor", "mode"):
            if saved.get(key) != getattr(self.monitor, "key" if key == "monitor" else key):
                raise ConfigError(f"EarlyStopping state key 'config.{key}' differs from this one's")
        try:
            cause = StopCause(state["stop_cause"])
        except ValueError:
            bad = state["stop_cause"]
            raise ConfigError(f"EarlyStopping state key 'stop_cause' is unknown: {bad!r}") from None
        if len(state["criteria"]) != len(self.criteria):
            raise ConfigError("EarlyStopping state key 'criteria' does not match the criteria")
        if (state.get("lr_schedule") is None) != (self.lr_schedule is None):
            raise ConfigError("EarlyStopping state key 'lr_schedule' does not match lr_schedule")
        self.monitor.load_state_dict(state["monitor"])
        self._patience.load_state_dict(state["patience"])
        for c, s in zip(self.criteria, state["criteria"], strict=True):
            c.load_state_dict(s)
        if self.lr_schedule is not None:
            self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.n_updates, self.should_stop = state["n_updates"], state["should_stop"]
        self.stopped_step, self.stop_cause = state["stopped_step"], cause
        self.reason = state["reason"]
        last = state["last_value"]
        self.last_value = None if last is None else float(last)

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor.key!r}, mode={self.monitor.mode!r}, "
            f"patience={self.patience!r}, best={self.best!r}, wait={self.wait}, "
            f"should_stop={self.should_stop})"
        )
