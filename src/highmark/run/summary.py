"""The text of :meth:`highmark.Run.summary`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from highmark.run.core import Run

__all__ = ["run_info", "summary_data", "summary_text"]

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


def run_info(run: Run) -> dict[str, Any]:
    """The content of ``run.json`` (format in docs/design.md)."""
    now = time.time()
    return {
        "monitor": run.monitor.key,
        "mode": run.monitor.mode,
        "unit": run._unit,
        "budget": run._budget,
        "started": run._started,
        "updated": now,
        "wall_time": run._wall_before + (now - run._started),
        "status": run._status,
        "stop_reason": run.stop_reason,
        "stop_cause": _stop_cause(run.stopping),
        "stop_step": getattr(run.stopping, "stopped_step", None),
        "best_step": run.stopping.best_step,
        "best_metrics": run._best_metrics,
        "epochs_run": run._done if run._unit == "epoch" else None,
        "steps_run": run._done if run._unit == "step" else run._batches,
        "policy": run.stopping.config(),
        "resumed": list(run._resumed),
        "continued": run._continued,
    }


def summary_data(run: Run) -> dict[str, Any]:
    """The facts :func:`summary_text` renders (cached when the loop ends)."""
    if run._summary_cache is not None and run._finished:
        return {**run._summary_cache, "status": run._status}
    checkpoints: list[tuple[int, bool, str]]
    try:
        checkpoints = [(c.step, c.is_best, str(c.kept_by or "")) for c in run.manager.checkpoints()]
    except Exception:  # a closed manager: keep what the end of the loop recorded
        checkpoints = []
    return {
        "directory": run.directory,
        "unit": run._unit or "epoch",
        "budget": run._budget,
        "done": run._done,
        "status": run._status,
        "monitor": run.monitor.key,
        "best_step": run.stopping.best_step,
        "best": run.stopping.best,
        "best_metrics": run._best_metrics,
        "stop_reason": run.stop_reason,
        "stop_step": getattr(run.stopping, "stopped_step", None),
        "evaluations": run._evaluations,
        "checkpoints": checkpoints,
        "restored_from": run._restored_from,
        "restore_best": run.restore_best,
        "resumed_from": run._resumed_from,
        "continued": run._continued,
        "already_over": run._already_over,
        "saves": run.saves,
        "save_stall_s": run.save_stall_s,
    }
