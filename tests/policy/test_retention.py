"""Retention rules on plain records: no files, no tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from highmark.errors import ConfigError
from highmark.policy.monitor import Monitor
from highmark.policy.retention import (
    KeepBest,
    KeepEvery,
    KeepLast,
    MaxBytes,
    Retention,
    best_record,
    retention_from_flags,
)


@dataclass
class Rec:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    created: float = 0.0
    size: int = 100


def recs(*losses: float | None, key: str = "loss") -> list[Rec]:
    """Records at steps 1..n; None means the metric was not reported."""
    return [
        Rec(step, {} if v is None else {key: v}, created=float(step))
        for step, v in enumerate(losses, 1)
    ]


def test_keep_best_min_keeps_the_k_lowest() -> None:
    kept = KeepBest(2, Monitor("loss", "min")).keep(recs(0.5, 0.2, 0.4, 0.3))
    assert sorted(kept) == [2, 4]


def test_keep_best_max_keeps_the_k_highest() -> None:
    kept = KeepBest(2, Monitor("acc", "max")).keep(recs(0.5, 0.9, 0.7, 0.6, key="acc"))
    assert sorted(kept) == [2, 3]


def test_keep_best_ties_rank_the_older_first() -> None:
    kept = KeepBest(1, Monitor("loss")).keep(recs(0.3, 0.3, 0.3))
    assert list(kept) == [1]


def test_keep_best_reason_names_rank_metric_and_score() -> None:
    kept = KeepBest(2, Monitor("loss")).keep(recs(0.5, 0.25))
    assert kept == {2: "best #1 loss=0.25", 1: "best #2 loss=0.5"}


def test_keep_best_never_ranks_missing_or_nan_metrics() -> None:
    kept = KeepBest(3, Monitor("loss")).keep(recs(None, math.nan, 0.9))
    assert list(kept) == [3]


def test_keep_last_keeps_the_n_highest_steps() -> None:
    assert sorted(KeepLast(2).keep(recs(1, 2, 3, 4))) == [3, 4]


def test_keep_every_keeps_multiples_of_n() -> None:
    records = [Rec(s) for s in range(0, 12)]
    assert sorted(KeepEvery(5).keep(records)) == [0, 5, 10]


@pytest.mark.parametrize(
    ("make", "bad"),
    [(KeepLast, 0), (KeepEvery, -1), (KeepLast, True), (MaxBytes, 0), (KeepLast, 1.5)],
)
def test_rules_refuse_bad_counts(make: type, bad: object) -> None:
    with pytest.raises(ConfigError):
        make(bad)


def test_retention_keeps_the_union_of_rules_with_every_reason() -> None:
    retention = Retention([KeepBest(1, Monitor("loss")), KeepLast(1), KeepEvery(2)])
    decision = retention.decide(recs(0.1, 0.5, 0.6, 0.7, 0.8))
    assert sorted(decision.keep) == [1, 2, 4, 5]
    assert decision.delete == {3: "not kept by best 1 by loss, last 1, every 2"}
    assert decision.keep[1] == "best #1 loss=0.1"
    assert decision.keep[4] == "every 2 steps"


def test_retention_keeps_protected_steps_with_their_reason() -> None:
    decision = Retention([KeepLast(1)]).decide(recs(1, 2, 3), protected={1: "resumed from"})
    assert decision.keep == {1: "protected: resumed from", 3: "last #1"}
    assert list(decision.delete) == [2]


def test_max_bytes_drops_the_oldest_non_best_first() -> None:
    retention = Retention([KeepBest(1, Monitor("loss")), KeepLast(3)], max_bytes=250)
    decision = retention.decide(recs(0.1, 0.5, 0.6, 0.7))  # 100 bytes each
    assert sorted(decision.keep) == [1, 4]
    assert "over max_bytes=250" in decision.delete[2]
    assert "over max_bytes=250" in decision.delete[3]


def test_max_bytes_drops_worse_best_ranks_before_better_ones() -> None:
    retention = Retention([KeepBest(3, Monitor("loss"))], max_bytes=200)
    decision = retention.decide(recs(0.3, 0.1, 0.2))
    assert sorted(decision.keep) == [2, 3]


def test_max_bytes_never_drops_protected_and_says_so() -> None:
    retention = Retention([KeepLast(1)], max_bytes=150)
    decision = retention.decide(recs(1, 2, 3), protected={1: "best", 3: "latest"})
    assert sorted(decision.keep) == [1, 3]
    assert decision.notes == ["protected checkpoints alone take 200 bytes, over max_bytes=150"]


def test_max_bytes_rule_in_the_list_is_the_budget() -> None:
    retention = Retention([KeepLast(3), MaxBytes(500)], max_bytes=150)
    assert retention.max_bytes is not None
    assert retention.max_bytes.limit == 150
    assert sorted(retention.decide(recs(1, 2, 3)).keep) == [3]


def test_best_record_replays_with_min_delta_like_the_stopper() -> None:
    # 0.95 does not beat 1.0 by 0.1, 0.88 does: the stopper's best is step 3.
    best = best_record(recs(1.0, 0.95, 0.88), Monitor("loss", min_delta=0.1))
    assert best is not None
    assert best.step == 3


def test_best_record_keeps_the_older_on_ties() -> None:
    best = best_record(recs(0.5, 0.2, 0.2), Monitor("loss"))
    assert best is not None
    assert best.step == 2


def test_best_record_skips_missing_and_nan() -> None:
    best = best_record(recs(None, math.nan, 0.7, None), Monitor("loss"))
    assert best is not None
    assert best.step == 3


def test_best_record_of_records_without_the_metric_is_none() -> None:
    assert best_record(recs(None, None), Monitor("loss")) is None


def test_retention_from_flags_builds_the_rules() -> None:
    retention = retention_from_flags(Monitor("loss"), keep_best=2, keep_last=1, keep_every=10)
    assert [type(r) for r in retention.rules] == [KeepBest, KeepLast, KeepEvery]


def test_retention_from_flags_without_monitor_ignores_keep_best() -> None:
    retention = retention_from_flags(None, keep_best=3, keep_last=2)
    assert [type(r) for r in retention.rules] == [KeepLast]


def test_retention_from_flags_refuses_negative_counts() -> None:
    with pytest.raises(ConfigError, match="keep_last"):
        retention_from_flags(None, keep_last=-1)


def test_retention_docstring_examples_run() -> None:
    import doctest

    import highmark.policy.retention as retention

    assert doctest.testmod(retention, raise_on_error=False).failed == 0
