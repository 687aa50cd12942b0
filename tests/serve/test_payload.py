"""``highmark.serve.payload``: what the page shows of a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.helpers import write_run
from highmark.serve.payload import metric_kind, run_payload, summary
from highmark.serve.runs import read_run

from .helpers import LiveRun


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("val_loss", "curve"), ("eval_accuracy", "curve"), ("train_loss", "curve"),
        ("lr", "lr"), ("learning_rate", "lr"), ("lr-Adam", "lr"), ("train/lr", "lr"),
        ("eval_runtime", "other"), ("eval_samples_per_second", "other"),
        ("train_steps_per_second", "other"), ("epoch", "other"), ("total_flos", "other"),
        ("global_step", "other"),
    ],
)  # fmt: skip
def test_metric_kind_sets_apart_rates_and_counters(name: str, kind: str) -> None:
    assert metric_kind(name) == kind


def test_patience_left_of_a_running_run_follows_each_evaluation(tmp_path: Path) -> None:
    run = LiveRun(str(tmp_path / "live"), patience=3)
    lefts = []
    for loss in (1.0, 0.8, 0.9, 0.95):
        run.evaluate(loss)
        row = summary("live", read_run(str(tmp_path / "live")))
        lefts.append((row["patience_left"], row["best_step"], row["wait"]))
        assert row["wait"] == run.stopper.wait
    run.finish()
    assert lefts == [(3, 0, 0), (3, 1, 0), (2, 1, 1), (1, 1, 2)]


def test_a_finished_run_shows_its_own_best_and_stop(tmp_path: Path) -> None:
    write_run(str(tmp_path / "run-a"))
    row = summary("run-a", read_run(str(tmp_path / "run-a")))
    assert (row["status"], row["best_step"], row["best_value"]) == ("stopped", 3, 0.5)
    assert row["stop_reason"] == "val_loss did not improve for 3 evaluations"
    assert (row["checkpoints"], row["checkpoint_steps"]) == (3, [3, 4, 6])


def test_payload_aligns_values_with_steps_epochs_and_wall_time(tmp_path: Path) -> None:
    run = LiveRun(str(tmp_path / "live"))
    run.evaluate(1.0)
    run.evaluate(float("nan"))
    run.finish()
    data = run_payload("live", read_run(str(tmp_path / "live")))
    assert data["steps"] == data["epochs"] == [0, 1]
    assert all(t is not None and t >= 0 for t in data["times"])
    assert data["metrics"]["val_loss"] == [1.0, None]  # NaN becomes a gap (strict JSON)
    assert data["kinds"] == {"val_loss": "curve", "train_loss": "curve", "eval_runtime": "other"}
