"""What the dashboard page shows of a run, as strict JSON-ready dicts (no NaN, no infinity).

:func:`summary` is one row of the runs table: status, monitor, best value and step, stop reason,
patience left, checkpoints kept. :func:`run_payload` adds the curves: one value list per metric,
aligned with the evaluations' steps, epochs and wall times, plus the checkpoints to mark.

Best step and patience left of a run come from its recorded stopping policy (``run.json``'s
``policy``) replayed over its ``history.jsonl`` with :class:`~highmark.policy.EarlyStopping`, the
code the run itself ran: they are current after every evaluation, while ``run.json`` is rewritten
only when a run starts and ends. A policy that cannot be replayed exactly (patience in seconds,
a ``ReduceLROnPlateau`` schedule, none recorded) gives no patience; the best step then comes from
``run.json``, else from the checkpoint index's best.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from highmark.serve.runs import RunFiles, run_name

__all__ = ["metric_kind", "replay_policy", "run_payload", "summary"]

_LR = re.compile(r"(^|[^a-z0-9])(lr|learning_rate)([^a-z0-9]|$)", re.IGNORECASE)
_OTHER = re.compile(
    r"runtime|per_second|_per_sec|total_flos|(^|[^a-z0-9])(epoch|epochs|step|global_step)$",
    re.IGNORECASE,
)
_POLICY_ARGS = (
    "monitor", "mode", "patience", "min_delta", "min_delta_mode", "baseline", "start_from",
    "stopping_threshold", "divergence_threshold", "check_finite", "smoothing", "patience_unit",
)  # fmt: skip


def metric_kind(name: str) -> str:
    """``"lr"`` for a learning rate, ``"other"`` for what is no learning curve (runtimes,
    throughputs, epoch/step counters), else ``"curve"``."""
    if _LR.search(name):
        return "lr"
    return "other" if _OTHER.search(name) else "curve"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def replay_policy(policy: Any, records: Sequence[Mapping[str, Any]]) -> Any:
    """The run's :class:`~highmark.policy.EarlyStopping` after replaying its history, or None
    when the policy is missing or cannot be replayed exactly (see the module docstring).

    Extra criteria are left out: they may stop a run but never change its best or its wait.
    """
    from highmark.errors import HighmarkError
    from highmark.policy.stopping import EarlyStopping

    if not isinstance(policy, Mapping) or policy.get("lr_schedule"):
        return None
    if policy.get("patience_unit", "evaluations") == "seconds":
        return None
    try:
        stopper = EarlyStopping(**{k: policy[k] for k in _POLICY_ARGS if k in policy})
    except (HighmarkError, TypeError, ValueError):
        return None
    for record in records:
        metrics = {k: v for k, v in record.get("metrics", {}).items() if v is not None}
        try:
            stopper.update(metrics, step=int(record["step"]))
        except (HighmarkError, KeyError, TypeError, ValueError):
            continue  # a record without the monitored value: Run would have refused it
    return stopper


def _value_at(records: Sequence[Mapping[str, Any]], key: str | None, step: Any) -> float | None:
    if key is None or step is None:
        return None
    for record in records:
        if record.get("step") == step:
            return _finite(record.get("metrics", {}).get(key))
    return None


def _best_step(files: RunFiles, stopper: Any) -> Any:
    info = files.info
    if info.get("status") not in (None, "running") and info.get("best_step") is not None:
        return info["best_step"]  # the run's own final word
    if stopper is not None:
        return stopper.best_step
    if info.get("best_step") is not None:
        return info["best_step"]
    flagged = [c["step"] for c in files.checkpoints if c.get("is_best")]
    return flagged[0] if flagged else None


def summary(run_id: str, files: RunFiles) -> dict[str, Any]:
    """One row of the runs table (strict JSON: non-finite numbers are None)."""
    info, records = files.info, files.records
    stopper = replay_policy(info.get("policy"), records)
    best_step = _best_step(files, stopper)
    best_value = _value_at(records, files.monitor, best_step)
    if best_value is None and files.monitor and best_step == info.get("best_step"):
        best_value = _finite((info.get("best_metrics") or {}).get(files.monitor))
    patience = wait = None
    if stopper is not None:
        patience, wait = stopper.patience, stopper.wait
    last = records[-1] if records else {}
    unit = info.get("unit") or "step"
    return {
        "id": run_id,
        "name": run_name(files.url),
        "url": files.url,
        "status": info.get("status") or ("unknown" if records else "empty"),
        "monitor": files.monitor,
        "mode": files.mode,
        "unit": unit,
        "best_step": best_step,
        "best_value": best_value,
        "stop_step": info.get("stop_step"),
        "stop_reason": info.get("stop_reason"),
        "stop_cause": info.get("stop_cause"),
        "patience": patience,
        "wait": wait,
        "patience_left": None if patience is None else max(patience - wait, 0),
        "evaluations": len(records),
        "last_step": last.get("step"),
        "last_time": _finite(last.get("time")),
        "budget": info.get("budget"),
        "checkpoints": len(files.checkpoints),
        "checkpoint_steps": [c["step"] for c in files.checkpoints],
        "bytes": sum(int(c.get("size") or 0) for c in files.checkpoints),
        "error": files.error,
    }


def _epochs(records: Sequence[Mapping[str, Any]], unit: str) -> list[float | None]:
    if unit == "epoch":
        return [_finite(r.get("step")) for r in records]
    return [_finite(r.get("epoch")) for r in records]


def run_payload(run_id: str, files: RunFiles) -> dict[str, Any]:
    """A run's summary, curves and checkpoints, as the page draws them.

    ``steps``/``epochs``/``times`` are parallel lists (one item per evaluation, None where not
    recorded; times in seconds since the run started); ``metrics`` maps each name to its values
    and ``kinds`` to :func:`metric_kind`.
    """
    head = summary(run_id, files)
    records = files.records
    times = [_finite(r.get("time")) for r in records]
    start = _finite(files.info.get("started"))
    known = [t for t in times if t is not None]
    origin = start if start is not None else (known[0] if known else None)
    names: dict[str, None] = {}
    for record in records:
        for key in record.get("metrics", {}):
            names.setdefault(str(key), None)
    return {
        **head,
        "steps": [r.get("step") for r in records],
        "epochs": _epochs(records, head["unit"]),
        "times": [None if t is None or origin is None else t - origin for t in times],
        "metrics": {k: [_finite(r.get("metrics", {}).get(k)) for r in records] for k in names},
        "kinds": {k: metric_kind(k) for k in names},
        "checkpoint_rows": [
            {
                "step": c["step"],
                "is_best": bool(c.get("is_best")),
                "is_latest": bool(c.get("is_latest")),
                "kept_by": c.get("kept_by"),
                "size": c.get("size"),
                "created": _finite(c.get("created")),
            }
            for c in files.checkpoints
        ],
    }
