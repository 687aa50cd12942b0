"""The text of :meth:`highmark.Run.summary`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["summary_text"]


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
