"""What a :class:`~highmark.Run` checkpoint holds, writing it, and restoring the best.

When a report is saved is the run's :class:`~highmark.policy.schedule.SaveSchedule`'s to say
(plus every improvement and the final state); :func:`save` tells the schedule what a save cost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from highmark.errors import CheckpointError

if TYPE_CHECKING:
    from highmark.run.state import RunState

__all__ = ["RESERVED", "checkpoint_metrics", "checkpoint_state", "restore_best", "save"]

logger = logging.getLogger("highmark.run.core")  # one logger name for everything a Run says

RESERVED = "highmark"
_STATE_VERSION = 1


def checkpoint_state(state: RunState, step: int, partial: bool) -> dict[str, Any]:
    """The state tree of a checkpoint: tracked objects plus the run's own state."""
    from highmark.state.torch import capture_rng

    tree: dict[str, Any] = {name: obj.state_dict() for name, obj in state.tracked.items()}
    tree[RESERVED] = {
        "version": _STATE_VERSION,
        "step": step,
        "unit": state.unit,
        "budget": state.budget,
        "done": state.done,
        "partial": partial,
        "current": state.current if partial else None,
        "reported": state.reported,
        "evaluations": state.evaluations,
        "batches": state.batches,
        "history_len": state.history_len,
        "stopping": state.stopping.state_dict(),
        "policy": json.dumps(state.stopping.config(), allow_nan=True, default=str),
        "best_metrics": state.best_metrics,
        "loaders": {name: ld.state_dict() for name, ld in state.loaders.items()},
        "rng": capture_rng(),
    }
    return tree


def checkpoint_step(state: RunState, partial: bool) -> int:
    """The step a checkpoint is saved under: the unit just completed, or the one under way."""
    if partial and state.current is not None:
        return state.current
    return max(state.done - 1, 0)


def checkpoint_metrics(state: RunState, step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The metrics the manager ranks by, and any monitored value kept out of the ranking."""
    if state.reported != step:
        return {}, {}
    metrics = {k: v for k, v in state.last_metrics.items() if v is not None}
    # The manager ranks with the stopper's Monitor; give it the value the stopper judged
    # (smoothed when smoothing is on), and only when the stopper's own best agrees: an
    # evaluation the stopper skipped (start_from) or stopped on before judging it
    # (stopping_threshold) must never become the best checkpoint.
    key = state.monitor.key
    judged = state.stopping.last_value if state.monitor.smoothing is not None else None
    if key in metrics and judged is not None:
        metrics[key] = float(judged)
    value = metrics.get(key)
    stopping = state.stopping
    best_here = stopping.best_step == step
    if value is not None and not best_here and state.monitor.is_improvement(value, stopping.best):
        return {k: v for k, v in metrics.items() if k != key}, {"unranked": {key: value}}
    return metrics, {}


def save(state: RunState, why: str, partial: bool = False) -> None:
    """Saves a checkpoint now; the loop's wait for it is added to ``state.save_stall_s``."""
    state.pending = None
    step = checkpoint_step(state, partial)
    metrics, extra = checkpoint_metrics(state, step) if not partial else ({}, {})
    metadata = {"unit": state.unit, "why": why, "partial": partial, "done": state.done, **extra}
    logger.debug("%s: saving %s %d (%s)", state.directory, state.unit, step, why)
    t0 = time.perf_counter()
    tree = checkpoint_state(state, step, partial)
    # force: a checkpoint taken mid-epoch is replaced by the one at the epoch's end
    state.manager.save(step, tree, metrics=metrics, metadata=metadata, force=True)
    cost = time.perf_counter() - t0
    state.save_stall_s += cost
    state.saves += 1
    state.last_saved = state.done
    schedule = state.schedule
    if schedule.saved(cost):  # save_every="auto": the interval was set or moved
        logger.info(
            "save_every='auto': a save costs %.3g s, MTBF %.3g s -> saving every %.3g s "
            "(Young's formula), at most once per evaluation",
            schedule.save_cost,
            schedule.mtbf,
            schedule.interval,
        )


def best_checkpoint(state: RunState) -> int | None:
    """The checkpoint of the stopper's best step; the manager's best if that one is gone."""
    wanted = state.stopping.best_step
    steps = {c.step for c in state.manager.checkpoints()}
    if wanted in steps:
        best = state.manager.best
        if best is not None and best.step != wanted:
            logger.warning(
                "%s: the index ranks %s %d best, the stopper %d; using the stopper's",
                state.directory, state.unit, best.step, wanted,
            )  # fmt: skip
        return wanted
    best = state.manager.best
    return None if best is None else best.step


def restore_best(state: RunState) -> None:
    """Loads the best checkpoint's weights into the tracked modules (into= their memory).

    A best checkpoint that cannot be restored (damaged, missing, unreadable) is verified to be
    so before any of its bytes reaches a module: the modules keep their last weights, and a
    warning says why.
    """
    if state.stopping.best_step is None:
        return
    step = best_checkpoint(state)
    if step is None:
        return
    targets = {n: o for n, o in state.tracked.items() if hasattr(o, "parameters")}
    if not targets:
        return
    live = {name: obj.state_dict() for name, obj in targets.items()}
    try:
        if _all_on_cpu(live):
            # Read straight into the live parameters (a module's state_dict shares their memory).
            state.manager.restore(step, keys=list(targets), into=live)
        else:  # e.g. on a GPU: read to host, then copy over
            restored = state.manager.restore(step, keys=list(targets))
            for name, obj in targets.items():
                obj.load_state_dict(restored[name])
    except (CheckpointError, OSError) as err:
        logger.warning(
            "%s: the best checkpoint (%s %d) cannot be restored, the model keeps its last "
            "weights: %s",
            state.directory, state.unit, step, err,
        )  # fmt: skip
        return
    state.restored_from = step
    logger.info("%s: restored the best weights (%s %d)", state.directory, state.unit, step)


def _all_on_cpu(tree: Any) -> bool:
    if isinstance(tree, Mapping):
        return all(_all_on_cpu(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_all_on_cpu(v) for v in tree)
    device = getattr(tree, "device", None)
    return device is None or getattr(device, "type", "cpu") == "cpu"
