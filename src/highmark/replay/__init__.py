"""Offline evaluation of stopping policies on recorded learning curves ("which patience?").

A *curve* is a recorded sequence of evaluations (step -> metrics). :func:`replay` runs every
policy of a grid over every curve with the real :class:`~highmark.EarlyStopping` and reports, per
policy and curve: the step it would stop at, the step it would restore (the best by the same
:class:`~highmark.Monitor` rule the checkpoint ranking uses), the monitored value there, the
regret against the best value anywhere on the curve, and the fraction of the budget saved.

Definitions (checked by hand in ``tests/test_replay.py``):

* the *budget* of a curve is its number of evaluations ``n``; a policy that stops at the ``i``-th
  evaluation (0-based) ran ``i + 1`` of them and saved ``1 - (i + 1) / n``; one that never stops
  saved 0;
* the *restore step* is the best evaluation seen up to the stop, replayed in order with
  ``monitor.is_improvement`` (so ``min_delta`` applies and ties keep the older one); NaN is never
  best;
* *regret* is ``value_at_restore - best_anywhere`` in min mode (``best - value`` in max mode),
  where ``best_anywhere`` is the strict best finite value of the whole curve; it is never
  negative. The *score regret* is the same for another metric (``score``), measured at the restore
  step against that metric's best anywhere;
* a curve *cut short* is one its run's own early stopping ended (``run.json`` status
  ``stopped``): the regret of a policy that does not stop before its end is unknown (None), as
  the run recorded nothing after its stop.

Curves without the monitored metric are skipped; the result's ``warnings`` say which, and which
curves were cut short.

Curves are read from a highmark run (``history.jsonl``), a CSV file (a ``step`` or ``epoch``
column and metric columns; Lightning's sparse ``metrics.csv`` rows are merged by epoch), a Keras
``History.history`` JSON (``{"loss": [...], "val_loss": [...]}``) or a JSON Lines history; see
:mod:`highmark.replay.curves`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from highmark.errors import ConfigError
from highmark.replay.curves import Curve
from highmark.replay.grid import build_policy, resolve_mode

__all__ = ["CurveResult", "PolicyResult", "ReplayResult", "evaluate", "replay"]


@dataclass(frozen=True)
class CurveResult:
    """What one policy does on one curve."""

    curve: str
    stop_step: int
    stopped: bool
    evaluations: int
    budget: int
    restore_step: int | None
    value: float | None
    best_value: float | None
    regret: float | None
    score: float | None = None
    score_regret: float | None = None
    saved: float = 0.0
    reason: str | None = None
    cut_short: bool = False


@dataclass(frozen=True)
class PolicyResult:
    """One policy of the grid over every curve, with its aggregates."""

    policy: dict[str, Any]
    label: str
    curves: list[CurveResult]
    mean_regret: float | None
    max_regret: float | None
    mean_score_regret: float | None
    mean_saved: float
    stopped_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready plain data."""
        return asdict(self)


@dataclass(frozen=True)
class ReplayResult:
    """The whole grid: one :class:`PolicyResult` per policy and the recommended one."""

    monitor: str
    score: str | None
    tolerance: float
    curves: list[str]
    policies: list[PolicyResult]
    recommended: PolicyResult | None
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    mode: str = "min"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready plain data (the ``--json`` output of ``highmark replay``)."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "score": self.score,
            "tolerance": self.tolerance,
            "curves": list(self.curves),
            "policies": [p.to_dict() for p in self.policies],
            "recommended": None if self.recommended is None else self.recommended.label,
            "note": self.note,
            "warnings": list(self.warnings),
        }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _best_anywhere(values: Iterable[float | None], mode: str) -> float | None:
    finite = [v for v in (_finite(x) for x in values) if v is not None]
    if not finite:
        return None
    return min(finite) if mode == "min" else max(finite)


def evaluate(
    curve: Curve,
    stopper: Any,
    *,
    score: str | None = None,
    score_mode: str = "max",
) -> CurveResult:
    """Runs one fresh stopper over one curve; see the module docstring for the definitions.

    On a curve that its run's own early stopping cut short (:attr:`Curve.cut_short`), a stopper
    that does not stop before the curve ends would have run on: its regret there is unknown
    (None, ``cut_short=True``).
    """
    monitor = stopper.monitor
    key, mode = monitor.key, monitor.mode
    points = curve.points(key)
    if not points:
        raise ConfigError(
            f"curve {curve.name!r} has no values of {key!r} (metrics: {sorted(curve.metric_names)})"
        )
    budget = len(points)
    best_value, best_idx = monitor.initial_best, None
    stopped, last = False, budget - 1
    for i, (step, metrics) in enumerate(points):
        value = _finite(metrics.get(key))
        if value is not None and monitor.is_improvement(value, best_value):
            best_value, best_idx = value, i
        if stopper.update({k: v for k, v in metrics.items() if v is not None}, step=step):
            stopped, last = True, i
            break
    unknown = curve.cut_short and not stopped
    best_anywhere = _best_anywhere((m.get(key) for _, m in points), mode)
    restore_step = value_there = regret = None
    score_value = score_regret = None
    if best_idx is not None:
        restore_step, restored = points[best_idx]
        value_there = best_value
        if best_anywhere is not None and not unknown:
            regret = value_there - best_anywhere if mode == "min" else best_anywhere - value_there
        if score is not None:
            score_value = _finite(restored.get(score))
            score_best = _best_anywhere((m.get(score) for _, m in points), score_mode)
            if score_value is not None and score_best is not None and not unknown:
                diff = score_best - score_value
                score_regret = diff if score_mode == "max" else -diff
    return CurveResult(
        curve=curve.name,
        stop_step=points[last][0],
        stopped=stopped,
        evaluations=last + 1,
        budget=budget,
        restore_step=restore_step,
        value=value_there,
        best_value=best_anywhere,
        regret=regret,
        score=score_value,
        score_regret=score_regret,
        saved=1.0 - (last + 1) / budget,
        reason=getattr(stopper, "reason", None) if stopped else None,
        cut_short=unknown,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def _label(policy: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in policy.items()) or "default"


def _usable(curves: Sequence[Curve], monitor: str) -> tuple[list[Curve], list[str]]:
    """The curves that recorded ``monitor``, and a warning for each one that did not."""
    usable = [c for c in curves if c.points(monitor)]
    warnings = [
        f"{c.name}: skipped, it has no values of {monitor!r} (its metrics: "
        f"{', '.join(sorted(c.metric_names)) or 'none'})"
        for c in curves
        if not c.points(monitor)
    ]
    if not usable:
        raise ConfigError(
            f"no curve has values of {monitor!r}; pick the metric with monitor (--monitor)"
            + "".join(f"; {w}" for w in warnings)
        )
    return usable, warnings


def _cut_short_warning(curves: Sequence[Curve], results: Sequence[PolicyResult]) -> list[str]:
    """One warning naming the curves cut short by early stopping where some policy ran past."""
    names = [c.name for i, c in enumerate(curves) if any(p.curves[i].cut_short for p in results)]
    if not names:
        return []
    later = sum(any(r.cut_short for r in p.curves) for p in results)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return [
        f"{len(names)} curve(s) cut short by their run's early stopping ({shown}): the regret "
        "of a policy that would have stopped later than the run did is unknown on such a curve; "
        f"{later} of {len(results)} policies would (their regret shows as '-', and none of "
        "them is recommended)"
    ]


def _policy_result(policy: Mapping[str, Any], rows: list[CurveResult], score: bool) -> PolicyResult:
    regrets = [r.regret for r in rows]
    return PolicyResult(
        policy=dict(policy),
        label=_label(policy),
        curves=rows,
        mean_regret=_mean(regrets),
        max_regret=None if None in regrets else max(r for r in regrets if r is not None),
        mean_score_regret=_mean([r.score_regret for r in rows]) if score else None,
        mean_saved=sum(r.saved for r in rows) / len(rows),
        stopped_fraction=sum(r.stopped for r in rows) / len(rows),
    )


def _recommend(results: Sequence[PolicyResult], tolerance: float) -> tuple[Any, str]:
    """The policy saving the most with mean regret within ``tolerance``, and the note on it."""
    eligible = [
        (i, p)
        for i, p in enumerate(results)
        if p.mean_regret is not None and p.mean_regret <= tolerance
    ]
    if not eligible:
        return None, f"no policy keeps the mean regret within {tolerance:g}"
    _, best = min(eligible, key=lambda ip: (-ip[1].mean_saved, ip[1].mean_regret, ip[0]))
    return best, (
        f"{best.label}: saves {best.mean_saved:.1%} of the budget on average "
        f"with mean regret {best.mean_regret:.4g} <= {tolerance:g}"
    )


def replay(
    curves: Sequence[Curve],
    grid: Sequence[Mapping[str, Any]],
    *,
    monitor: str | None = None,
    mode: str | None = "auto",
    score: str | None = None,
    score_mode: str | None = "auto",
    tolerance: float = 0.01,
    train_monitor: str = "train_loss",
) -> ReplayResult:
    """Evaluates every policy of ``grid`` on every curve and recommends the cheapest good one.

    ``monitor`` defaults to what the first highmark run among ``curves`` recorded in its
    ``run.json``, else ``val_loss``; ``mode`` and ``score_mode`` ``"auto"`` (or None) resolve by
    :func:`~highmark.replay.grid.resolve_mode` (the runs' recorded mode, else the metric's name).
    Curves without a value of ``monitor`` are skipped with a warning (an error when none has
    one). The recommendation is the policy with the largest mean budget saved among those whose
    mean regret is at most ``tolerance`` (ties: the lower mean regret, then the earlier grid
    point). A policy with a curve where it restores nothing (no finite value seen), or where its
    regret is unknown (a curve cut short, see :func:`evaluate`), has no mean regret and is never
    recommended.
    """
    if not curves:
        raise ConfigError("no curves to replay")
    infos = [c.info for c in curves]
    recorded = next((i for i in infos if i.get("monitor")), {})
    monitor = monitor or str(recorded.get("monitor", "val_loss"))
    mode = resolve_mode(monitor, mode, infos)
    score_mode = resolve_mode(score, score_mode, infos, "score_mode") if score else "max"
    curves, warnings = _usable(curves, monitor)
    results = [
        _policy_result(policy, [
            evaluate(curve, build_policy(policy, monitor, mode, train_monitor), score=score,
                     score_mode=score_mode)
            for curve in curves
        ], score is not None)
        for policy in grid or [{}]
    ]  # fmt: skip
    recommended, note = _recommend(results, tolerance)
    return ReplayResult(
        monitor=monitor,
        score=score,
        tolerance=tolerance,
        curves=[c.name for c in curves],
        policies=results,
        recommended=recommended,
        note=note,
        mode=mode,
        warnings=warnings + _cut_short_warning(curves, results),
    )
