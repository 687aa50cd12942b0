"""Retention: which checkpoints to keep, decided over plain records (no I/O).

A record is anything with ``step: int``, ``metrics: Mapping[str, float]``, ``created: float`` and
``size: int`` (a :class:`~highmark.store.index.CheckpointInfo` is one). Rules say which steps
they keep and why; :class:`Retention` takes their union, adds the protected steps (the best, the
latest, the one a run resumed from) and then trims to a byte budget.

Ranking: a record whose monitored metric is missing or NaN never ranks. Ties rank the **older**
checkpoint (smaller step) first, so a later equal score never displaces an earlier best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from highmark.errors import ConfigError, MetricNotFoundError
from highmark.policy.monitor import Monitor

__all__ = [
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "MaxBytes",
    "Record",
    "Retention",
    "RetentionDecision",
    "RetentionRule",
    "best_record",
    "monitored_value",
    "retention_from_flags",
]


class Record(Protocol):
    """What retention needs to know about a checkpoint."""

    @property
    def step(self) -> int: ...
    @property
    def metrics(self) -> Mapping[str, Any]: ...
    @property
    def created(self) -> float: ...
    @property
    def size(self) -> int: ...


class RetentionRule(Protocol):
    """A rule naming the steps it keeps, each with a reason."""

    def keep(self, records: Sequence[Record]) -> dict[int, str]: ...


def _count(name: str, n: object, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {n!r}")
    return n


def monitored_value(record: Record, monitor: Monitor) -> float | None:
    """The record's monitored value, or None when it is missing, not a number, or NaN."""
    try:
        value = monitor.value(record.metrics)
    except (MetricNotFoundError, TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class KeepBest:
    """Keeps the ``k`` best records by the monitored metric (ties: the older first).

    >>> from types import SimpleNamespace as R
    >>> recs = [R(step=s, metrics={"loss": v}, created=0.0, size=1)
    ...         for s, v in [(1, 0.5), (2, 0.3), (3, 0.3), (4, float("nan")), (5, 0.4)]]
    >>> KeepBest(2, Monitor("loss")).keep(recs)
    {2: 'best #1 loss=0.3', 3: 'best #2 loss=0.3'}
    """

    def __init__(self, k: int, monitor: Monitor | str) -> None:
        self.k = _count("KeepBest k", k, 1)
        self.monitor = Monitor(monitor) if isinstance(monitor, str) else monitor

    def ranked(self, records: Iterable[Record]) -> list[tuple[Record, float]]:
        """All records with a usable metric, best first (ties: smaller step first)."""
        scored = [(r, v) for r in records if (v := monitored_value(r, self.monitor)) is not None]
        scored.sort(key=lambda rv: (self.monitor.sort_key(rv[1]), rv[0].step))
        return scored

    @property
    def label(self) -> str:
        """A short name for reasons: ``best 3 by val_loss``."""
        return f"best {self.k} by {self.monitor.key}"

    def keep(self, records: Sequence[Record]) -> dict[int, str]:
        key = self.monitor.key
        top = self.ranked(records)[: self.k]
        return {r.step: f"best #{i} {key}={_fmt(v)}" for i, (r, v) in enumerate(top, 1)}

    def __repr__(self) -> str:
        return f"KeepBest({self.k}, {self.monitor!r})"


class KeepLast:
    """Keeps the ``n`` most recent records (by step)."""

    def __init__(self, n: int) -> None:
        self.n = _count("KeepLast n", n, 1)

    @property
    def label(self) -> str:
        """A short name for reasons: ``last 2``."""
        return f"last {self.n}"

    def keep(self, records: Sequence[Record]) -> dict[int, str]:
        steps = sorted((r.step for r in records), reverse=True)[: self.n]
        return {s: f"last #{i}" for i, s in enumerate(steps, 1)}

    def __repr__(self) -> str:
        return f"KeepLast({self.n})"


class KeepEvery:
    """Keeps every record whose step is a multiple of ``n``, for good (milestones)."""

    def __init__(self, n: int) -> None:
        self.n = _count("KeepEvery n", n, 1)

    @property
    def label(self) -> str:
        """A short name for reasons: ``every 10``."""
        return f"every {self.n}"

    def keep(self, records: Sequence[Record]) -> dict[int, str]:
        return {r.step: f"every {self.n} steps" for r in records if r.step % self.n == 0}

    def __repr__(self) -> str:
        return f"KeepEvery({self.n})"


class MaxBytes:
    """A byte budget: drops unprotected kept records until their total size fits ``limit``.

    Drop order (lowest priority first): records kept only by non-best rules, oldest first; then
    records kept by :class:`KeepBest`, worst-ranked first. Protected records are never dropped;
    if they alone exceed the budget, the decision says so in its notes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = _count("max_bytes", limit, 1)

    def __repr__(self) -> str:
        return f"MaxBytes({self.limit})"


@dataclass
class RetentionDecision:
    """What to keep and delete, each step with the reason (which rule, which score)."""

    keep: dict[int, str] = field(default_factory=dict)
    delete: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Retention:
    """The union of retention rules, plus protected steps, trimmed to an optional byte budget.

    Args:
        rules: Rules whose kept steps are united. A :class:`MaxBytes` among them is the budget.
        max_bytes: A byte budget (int or :class:`MaxBytes`); the smaller one wins if both given.
    """

    def __init__(
        self, rules: Sequence[RetentionRule | MaxBytes], max_bytes: int | MaxBytes | None = None
    ) -> None:
        self.rules: list[RetentionRule] = [r for r in rules if not isinstance(r, MaxBytes)]
        budgets = [r.limit for r in rules if isinstance(r, MaxBytes)]
        if max_bytes is not None:
            budgets.append(max_bytes.limit if isinstance(max_bytes, MaxBytes) else max_bytes)
        self.max_bytes = MaxBytes(min(budgets)) if budgets else None

    def decide(
        self, records: Sequence[Record], protected: Mapping[int, str] | None = None
    ) -> RetentionDecision:
        """Decides over ``records``; ``protected`` steps (step -> why) are always kept."""
        protected = dict(protected or {})
        by_step = {r.step: r for r in records}
        reasons: dict[int, list[str]] = {}
        best_rank: dict[int, int] = {}
        for rule in self.rules:
            kept = rule.keep(records)
            for step, why in kept.items():
                reasons.setdefault(step, []).append(why)
            if isinstance(rule, KeepBest):
                for rank, step in enumerate(kept, 1):
                    best_rank[step] = min(best_rank.get(step, rank), rank)
        for step, why in protected.items():
            if step in by_step:
                reasons.setdefault(step, []).append(f"protected: {why}")
        decision = RetentionDecision()
        for step in sorted(by_step):
            if step in reasons:
                decision.keep[step] = "; ".join(reasons[step])
            else:
                decision.delete[step] = f"not kept by {self._names()}"
        if self.max_bytes is not None:
            self._trim(decision, by_step, best_rank, protected)
        return decision

    def _names(self) -> str:
        return ", ".join(getattr(r, "label", repr(r)) for r in self.rules) or "any rule"

    def _trim(
        self,
        decision: RetentionDecision,
        by_step: Mapping[int, Record],
        best_rank: Mapping[int, int],
        protected: Mapping[int, str],
    ) -> None:
        assert self.max_bytes is not None
        limit = self.max_bytes.limit
        total = sum(by_step[s].size for s in decision.keep)
        candidates = [s for s in decision.keep if s not in protected]
        # Non-best first (oldest first), then best ones from the worst rank up.
        candidates.sort(key=lambda s: (s in best_rank, -best_rank.get(s, 0), s))
        for step in candidates:
            if total <= limit:
                break
            total -= by_step[step].size
            decision.delete[step] = f"over max_bytes={limit} (was kept by: {decision.keep[step]})"
            del decision.keep[step]
        if total > limit:
            decision.notes.append(
                f"protected checkpoints alone take {total} bytes, over max_bytes={limit}"
            )
        decision.delete = dict(sorted(decision.delete.items()))

    def __repr__(self) -> str:
        return f"Retention({self.rules!r}, max_bytes={self.max_bytes!r})"


def best_record(records: Iterable[Record], monitor: Monitor) -> Record | None:
    """The best record by sequential replay in step order with ``monitor.is_improvement``.

    The same answer as the early stopper's best: ``min_delta`` applies, a tie keeps the older
    record, and a record without the metric (or NaN) is never best.
    """
    best: Record | None = None
    best_value = monitor.initial_best
    for record in sorted(records, key=lambda r: r.step):
        value = monitored_value(record, monitor)
        if value is not None and monitor.is_improvement(value, best_value):
            best, best_value = record, value
    return best


def retention_from_flags(
    monitor: Monitor | str | None,
    keep_best: int | None = 1,
    keep_last: int | None = 1,
    keep_every: int | None = None,
    max_bytes: int | None = None,
) -> Retention:
    """Builds the :class:`Retention` the keyword flags describe (0 or None turns a rule off).

    ``keep_best`` needs a monitor; without one it is ignored (nothing can rank).
    """
    for name, n, minimum in (
        ("keep_best", keep_best, 0),
        ("keep_last", keep_last, 0),
        ("keep_every", keep_every, 1),
    ):
        if n is not None:
            _count(name, n, minimum)
    rules: list[RetentionRule] = []
    if keep_best and monitor is not None:
        rules.append(KeepBest(keep_best, monitor))
    if keep_last:
        rules.append(KeepLast(keep_last))
    if keep_every:
        rules.append(KeepEvery(keep_every))
    return Retention(rules, max_bytes=max_bytes)
