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
  step against that metric's best anywhere.

Curves are read from a highmark run (``history.jsonl``), a CSV file (a ``step`` or ``epoch``
column and metric columns; Lightning's sparse ``metrics.csv`` rows are merged by epoch), a Keras
``History.history`` JSON (``{"loss": [...], "val_loss": [...]}``) or a JSON Lines history; see
:mod:`highmark.replay.curves`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from highmark.errors import ConfigError
from highmark.replay.curves import Curve, load_curves

__all__ = [
    "Curve",
    "CurveResult",
    "PolicyResult",
    "ReplayResult",
    "build_policy",
    "evaluate",
    "load_curves",
    "parse_grid",
    "parse_values",
    "replay",
]

# Policy options a grid may vary, with the type of their values.
POLICY_OPTIONS: dict[str, type] = {
    "patience": int,
    "min_delta": float,
    "min_delta_mode": str,
    "mode": str,
    "baseline": float,
    "start_from": int,
    "criteria": str,
    "smoothing": str,
}


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

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready plain data (the ``--json`` output of ``highmark replay``)."""
        return {
            "monitor": self.monitor,
            "score": self.score,
            "tolerance": self.tolerance,
            "curves": list(self.curves),
            "policies": [p.to_dict() for p in self.policies],
            "recommended": None if self.recommended is None else self.recommended.label,
            "note": self.note,
        }


def parse_values(text: str, kind: type) -> list[Any]:
    """Parses one grid option: a value ``5``, a list ``2,5,10`` or a range ``0..30[:step]``.

    Ranges include both ends. ``none`` stands for ``None`` (e.g. no baseline).

    >>> parse_values("0..6:2", int)
    [0, 2, 4, 6]
    >>> parse_values("1e-3,0", float)
    [0.001, 0.0]
    """
    values: list[Any] = []
    if kind is str:
        return [v.strip() for v in text.split(",") if v.strip()]
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == "none":
            values.append(None)
            continue
        try:
            if ".." in part:
                lo_text, _, rest = part.partition("..")
                hi_text, _, step_text = rest.partition(":")
                lo, hi = kind(lo_text), kind(hi_text)
                step = kind(step_text) if step_text else kind(1)
                if step <= 0 or hi < lo:
                    raise ConfigError(f"bad range {part!r}: need low <= high and a positive step")
                count = math.floor((hi - lo) / step + 1e-9) + 1
                values.extend(kind(lo + i * step) for i in range(count))
            else:
                values.append(kind(part))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad value {part!r}: expected {kind.__name__} values") from exc
    if not values:
        raise ConfigError(f"no values in {text!r}")
    return values


def parse_grid(options: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The product of the given policy options (name -> grid text), in a stable order."""
    names = [n for n, v in options.items() if v is not None]
    unknown = [n for n in names if n not in POLICY_OPTIONS]
    if unknown:
        raise ConfigError(f"unknown policy option(s) {unknown}; known: {sorted(POLICY_OPTIONS)}")
    axes = [parse_values(str(options[n]), POLICY_OPTIONS[n]) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def _criteria(spec: str, train_monitor: str) -> tuple[list[Any], dict[str, Any]]:
    """Criterion objects and EarlyStopping keywords for a ``+``-joined criteria spec."""
    from highmark import criteria as crit

    objects: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in (s.strip() for s in spec.split("+")):
        if not item or item.lower() == "none":
            continue
        name, _, arg = item.partition(":")
        name = name.lower()
        try:
            if name == "gl":
                objects.append(crit.GeneralizationLoss(float(arg)))
            elif name == "pq":
                objects.append(crit.ProgressQuotient(float(arg), train_monitor=train_monitor))
            elif name == "up":
                objects.append(crit.SuccessiveIncreases(int(arg)))
            elif name == "threshold":
                kwargs["stopping_threshold"] = float(arg)
            elif name == "divergence":
                kwargs["divergence_threshold"] = float(arg)
            elif name == "maxsteps":
                objects.append(crit.MaxSteps(int(arg)))
            else:
                raise ConfigError(
                    f"unknown criterion {item!r}; known: gl:A, pq:A, up:S, threshold:V, "
                    "divergence:V, maxsteps:N, none (join several with '+')"
                )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad criterion {item!r}: {exc}") from exc
    return objects, kwargs


def _smoothing(spec: str) -> Any:
    """A smoothing of the monitored value from ``ema:ALPHA``, ``ma:WINDOW`` or ``none``."""
    from highmark.policy.monitor import ExponentialMovingAverage, MovingAverage

    name, _, arg = spec.strip().lower().partition(":")
    try:
        if name == "ema":
            return ExponentialMovingAverage(float(arg))
        if name == "ma":
            return MovingAverage(int(arg))
    except ValueError as exc:
        raise ConfigError(f"bad smoothing {spec!r}: {exc}") from exc
    if name == "none":
        return None
    raise ConfigError(f"unknown smoothing {spec!r}; known: ema:ALPHA, ma:WINDOW, none")


def build_policy(
    policy: Mapping[str, Any], monitor: str, mode: str = "min", train_monitor: str = "train_loss"
) -> Any:
    """A fresh :class:`~highmark.EarlyStopping` for one grid point."""
    from highmark.policy.stopping import EarlyStopping

    kwargs: dict[str, Any] = {"monitor": monitor, "mode": mode}
    for name, value in policy.items():
        if name == "criteria":
            objects, extra = _criteria(str(value), train_monitor)
            kwargs["criteria"] = tuple(objects)
            kwargs.update(extra)
        elif name == "smoothing":
            kwargs["smoothing"] = _smoothing(str(value))
        else:
            kwargs[name] = value
    return EarlyStopping(**kwargs)


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
    """Runs one fresh stopper over one curve; see the module docstring for the definitions."""
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
    best_anywhere = _best_anywhere((m.get(key) for _, m in points), mode)
    restore_step = value_there = regret = None
    score_value = score_regret = None
    if best_idx is not None:
        restore_step, restored = points[best_idx]
        value_there = best_value
        if best_anywhere is not None:
            regret = value_there - best_anywhere if mode == "min" else best_anywhere - value_there
        if score is not None:
            score_value = _finite(restored.get(score))
            score_best = _best_anywhere((m.get(score) for _, m in points), score_mode)
            if score_value is not None and score_best is not None:
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
    )


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def _label(policy: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in policy.items()) or "default"


def replay(
    curves: Sequence[Curve],
    grid: Sequence[Mapping[str, Any]],
    *,
    monitor: str | None = None,
    mode: str | None = None,
    score: str | None = None,
    score_mode: str = "max",
    tolerance: float = 0.01,
    train_monitor: str = "train_loss",
) -> ReplayResult:
    """Evaluates every policy of ``grid`` on every curve and recommends the cheapest good one.

    ``monitor``/``mode`` default to what the first highmark run among ``curves`` recorded in its
    ``run.json``, else ``val_loss``/``min``. The recommendation is the policy with the largest
    mean budget saved among those whose mean regret is at most ``tolerance`` (ties: the lower
    mean regret, then the earlier grid point). A policy with a curve where it restores nothing
    (no finite value seen) has no mean regret and is never recommended.
    """
    if not curves:
        raise ConfigError("no curves to replay")
    recorded = next((c.info for c in curves if c.info.get("monitor")), {})
    monitor = monitor or str(recorded.get("monitor", "val_loss"))
    mode = mode or str(recorded.get("mode", "min"))
    if not grid:
        grid = [{}]
    if mode not in ("min", "max") or score_mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r} / {score_mode!r}")
    results: list[PolicyResult] = []
    for policy in grid:
        rows = [
            evaluate(
                curve,
                build_policy(policy, monitor, mode, train_monitor),
                score=score,
                score_mode=score_mode,
            )
            for curve in curves
        ]
        regrets = [r.regret for r in rows]
        results.append(
            PolicyResult(
                policy=dict(policy),
                label=_label(policy),
                curves=rows,
                mean_regret=_mean(regrets),
                max_regret=None if None in regrets else max(r for r in regrets if r is not None),
                mean_score_regret=_mean([r.score_regret for r in rows]) if score else None,
                mean_saved=sum(r.saved for r in rows) / len(rows),
                stopped_fraction=sum(r.stopped for r in rows) / len(rows),
            )
        )
    eligible = [
        (i, p)
        for i, p in enumerate(results)
        if p.mean_regret is not None and p.mean_regret <= tolerance
    ]
    recommended = None
    note = f"no policy keeps the mean regret within {tolerance:g}"
    if eligible:
        _, recommended = min(eligible, key=lambda ip: (-ip[1].mean_saved, ip[1].mean_regret, ip[0]))
        note = (
            f"{recommended.label}: saves {recommended.mean_saved:.1%} of the budget on average "
            f"with mean regret {recommended.mean_regret:.4g} <= {tolerance:g}"
        )
    return ReplayResult(
        monitor=monitor,
        score=score,
        tolerance=tolerance,
        curves=[c.name for c in curves],
        policies=results,
        recommended=recommended,
        note=note,
    )
