"""What a :class:`~highmark.Run` says about itself: ``run.json`` and its summary text."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from highmark.store.runfiles import RunInfo

if TYPE_CHECKING:
    from highmark.run.state import RunState

__all__ = ["run_info", "summary_data", "summary_text", "write_run_info"]

logger = logging.getLogger("highmark.run.core")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    return str(value)


def _metrics(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return ""
    return "  ".join(f"{k}={_num(v)}" for k, v in metrics.items())


def _without(metrics: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    return {k: v for k, v in (metrics or {}).items() if k != key}


def summary_text(d: Mapping[str, Any]) -> str:
    """Renders the summary of a run from the facts :class:`~highmark.Run` gathered."""
    unit = d["unit"]
    lines = [f"highmark run {d['directory']}"]
    status = d["status"]
    budget = d["budget"]
    done = d["done"]
    if status == "stopped" or d["stop_reason"]:
        outcome = f"stopped early at {unit} {d['stop_step']}: {d['stop_reason']}"
    elif status == "budget":
        outcome = f"ran its whole budget of {budget} {unit}s without stopping early"
    elif status == "interrupted":
        outcome = f"interrupted after {done} {unit}s; rerun with resume=True to continue"
    elif status == "failed":
        outcome = f"failed during {unit} {done} (an exception in the training loop)"
    else:
        outcome = "running"
    lines.append(f"  outcome:     {outcome}")
    if d["already_over"]:
        lines.append(f"  resumed:     the run {d['already_over']}; nothing more was run")
    budget_text = f" of {budget}" if budget is not None else ""
    lines.append(f"  {unit}s run:  {done}{budget_text} ({d['evaluations']} evaluations)")
    if d["best_step"] is not None:
        lines.append(
            f"  best:        {unit} {d['best_step']}  {d['monitor']}={_num(d['best'])}"
            + (
                f"  ({others})"
                if (others := _metrics(_without(d["best_metrics"], d["monitor"])))
                else ""
            )
        )
    else:
        lines.append(f"  best:        none ({d['monitor']} never improved on its start value)")
    kept = d["checkpoints"]
    if kept:
        parts = []
        for step, is_best, _why in kept:
            parts.append(f"{step}{' (best)' if is_best else ''}")
        lines.append(f"  checkpoints: {len(kept)} kept at {unit}s " + ", ".join(parts))
    else:
        lines.append("  checkpoints: none")
    if d["restored_from"] is not None:
        lines.append(
            f"  weights:     the model holds the best weights, from {unit} {d['restored_from']}"
        )
    elif d["restore_best"]:
        lines.append(
            "  weights:     the model holds the last weights (no best checkpoint to restore)"
        )
    else:
        lines.append("  weights:     the model holds the last weights (restore_best=False)")
    if d["resumed_from"] is not None:
        lines.append(f"  resume:      resumed from the checkpoint of {unit} {d['resumed_from']}")
    if d["continued"]:
        lines.append(f"  continued:   {d['continued']}")
    if d["saves"]:
        lines.append(
            f"  saving:      {d['saves']} saves this session, the loop waited "
            f"{d['save_stall_s']:.3f} s for them in all"
        )
    return "\n".join(lines)


def _stop_cause(stopping: Any) -> str | None:
    """The stopper's machine-readable stop cause (``StopCause`` value), None when not stopped."""
    cause = getattr(stopping, "stop_cause", None)
    value = getattr(cause, "value", cause)
    return None if value in (None, "not_stopped") else str(value)


def run_info(state: RunState) -> RunInfo:
    """The content of ``run.json`` (:class:`~highmark.store.runfiles.RunInfo`)."""
    now = time.time()
    return RunInfo(
        monitor=state.monitor.key,
        mode=state.monitor.mode,
        unit=state.unit,
        budget=state.budget,
        started=state.started,
        updated=now,
        wall_time=state.wall_before + (now - state.started),
        status=state.status,
        stop_reason=state.stop_reason,
        stop_cause=_stop_cause(state.stopping),
        stop_step=getattr(state.stopping, "stopped_step", None),
        best_step=state.stopping.best_step,
        best_metrics=state.best_metrics,
        epochs_run=state.done if state.unit == "epoch" else None,
        steps_run=state.done if state.unit == "step" else state.batches,
        policy=state.stopping.config(),
        resumed=list(state.resumed),
        continued=state.continued,
    )


def write_run_info(state: RunState) -> None:
    """Replaces ``run.json`` with :func:`run_info`; a failure is logged, not raised (``run.json``
    is a summary: the checkpoints are the run's truth)."""
    try:
        state.history.write_run_info(run_info(state))
    except OSError:
        logger.exception("%s: could not write run.json", state.directory)


def summary_data(state: RunState) -> dict[str, Any]:
    """The facts :func:`summary_text` renders (cached when the loop ends)."""
    if state.summary_cache is not None and state.finished:
        return {**state.summary_cache, "status": state.status}
    checkpoints: list[tuple[int, bool, str]]
    try:
        checkpoints = [
            (c.step, c.is_best, str(c.kept_by or "")) for c in state.manager.checkpoints()
        ]
    except Exception:  # a closed manager: keep what the end of the loop recorded
        checkpoints = []
    return {
        "directory": state.directory,
        "unit": state.unit or "epoch",
        "budget": state.budget,
        "done": state.done,
        "status": state.status,
        "monitor": state.monitor.key,
        "best_step": state.stopping.best_step,
        "best": state.stopping.best,
        "best_metrics": state.best_metrics,
        "stop_reason": state.stop_reason,
        "stop_step": getattr(state.stopping, "stopped_step", None),
        "evaluations": state.evaluations,
        "checkpoints": checkpoints,
        "restored_from": state.restored_from,
        "restore_best": state.restore_best,
        "resumed_from": state.resumed_from,
        "continued": state.continued,
        "already_over": state.already_over,
        "saves": state.saves,
        "save_stall_s": state.save_stall_s,
    }
