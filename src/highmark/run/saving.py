"""What a :class:`~highmark.Run` checkpoint holds, when it is written, and restoring the best."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from highmark.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from highmark.run.core import Run

__all__ = [
    "check_save_every",
    "checkpoint_metrics",
    "checkpoint_state",
    "due",
    "restore_best",
    "save",
]

logger = logging.getLogger("highmark.run.core")  # one logger name for everything a Run says

_RESERVED = "highmark"
_STATE_VERSION = 1


def check_save_every(save_every: int | str, mtbf: float | None) -> None:
    """Validates Run's ``save_every`` and ``mtbf`` arguments; ConfigError names the bad one."""
    if save_every == "auto":
        if mtbf is None or isinstance(mtbf, bool) or not 0 < float(mtbf) < math.inf:
            raise ConfigError(f'save_every="auto" needs mtbf= in seconds (> 0), got {mtbf!r}')
    elif isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise ConfigError(f'save_every must be an int >= 1 or "auto", got {save_every!r}')
    elif mtbf is not None:
        raise ConfigError('mtbf= is only used with save_every="auto"')


def checkpoint_state(run: Run, step: int, partial: bool) -> dict[str, Any]:
    """The state tree of a checkpoint: tracked objects plus the run's own state."""
    from highmark.state.torch import capture_rng

    state: dict[str, Any] = {name: obj.state_dict() for name, obj in run._tracked.items()}
    state[_RESERVED] = {
        "version": _STATE_VERSION,
        "step": step,
        "unit": run._unit,
        "budget": run._budget,
        "done": run._done,
        "partial": partial,
        "current": run._current if partial else None,
        "reported": run._reported,
        "evaluations": run._evaluations,
        "batches": run._batches,
        "history_len": run._history_len,
        "stopping": run.stopping.state_dict(),
        "policy": json.dumps(run.stopping.config(), allow_nan=True, default=str),
        "best_metrics": run._best_metrics,
        "loaders": {name: ld.state_dict() for name, ld in run._loaders.items()},
        "rng": capture_rng(),
    }
    return state


def checkpoint_step(run: Run, partial: bool) -> int:
    """The step a checkpoint is saved under: the unit just completed, or the one under way."""
    if partial and run._current is not None:
        return run._current
    return max(run._done - 1, 0)


def checkpoint_metrics(run: Run, step: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The metrics the manager ranks by, and any monitored value kept out of the ranking."""
    if run._reported != step:
        return {}, {}
    metrics = {k: v for k, v in run._last_metrics.items() if v is not None}
    # The manager ranks with the stopper's Monitor; give it the value the stopper judged
    # (smoothed when smoothing is on), and only when the stopper's own best agrees: an
    # evaluation the stopper skipped (start_from) or stopped on before judging it
    # (stopping_threshold) must never become the best checkpoint.
    key = run.monitor.key
    judged = run.stopping.last_value if run.monitor.smoothing is not None else None
    if key in metrics and judged is not None:
        metrics[key] = float(judged)
    value = metrics.get(key)
    best_here = run.stopping.best_step == step
    if value is not None and not best_here and run.monitor.is_improvement(value, run.stopping.best):
        return {k: v for k, v in metrics.items() if k != key}, {"unranked": {key: value}}
    return metrics, {}


def save(run: Run, why: str, partial: bool = False) -> None:
    """Saves a checkpoint now; the loop's wait for it is added to ``run.save_stall_s``."""
    run._pending = None
    step = checkpoint_step(run, partial)
    metrics, extra = checkpoint_metrics(run, step) if not partial else ({}, {})
    metadata = {"unit": run._unit, "why": why, "partial": partial, "done": run._done, **extra}
    logger.debug("%s: saving %s %d (%s)", run.directory, run._unit, step, why)
    t0 = time.perf_counter()
    state = checkpoint_state(run, step, partial)
    # force: a checkpoint taken mid-epoch is replaced by the one at the epoch's end
    run.manager.save(step, state, metrics=metrics, metadata=metadata, force=True)
    cost = time.perf_counter() - t0
    run.save_stall_s += cost
    run.saves += 1
    run._last_saved = run._done
    run._evals_since_save = 0
    run._last_save_time = time.monotonic()
    measure(run, cost)


def due(run: Run) -> bool:
    """Whether the evaluation just reported should be saved under ``save_every``."""
    if run.save_every == "auto":
        if run._save_cost is None:
            return True
        return time.monotonic() - run._last_save_time >= (run._interval or 0.0)
    assert isinstance(run.save_every, int)
    return run._evals_since_save >= run.save_every


def measure(run: Run, cost: float) -> None:
    """Re-estimates the save cost and, for ``save_every="auto"``, Young's interval."""
    if run.save_every != "auto" or run.mtbf is None:
        return
    from highmark.policy.schedule import young_interval

    run._save_cost = cost if run._save_cost is None else 0.7 * run._save_cost + 0.3 * cost
    interval = young_interval(max(run._save_cost, 1e-6), run.mtbf)
    if run._interval is None or abs(interval - run._interval) > 0.25 * run._interval:
        logger.info(
            "save_every='auto': a save costs %.3g s, MTBF %.3g s -> saving every %.3g s "
            "(Young's formula), at most once per evaluation",
            run._save_cost,
            run.mtbf,
            interval,
        )
    run._interval = interval


def best_checkpoint(run: Run) -> int | None:
    """The checkpoint of the stopper's best step; the manager's best if that one is gone."""
    wanted = run.stopping.best_step
    steps = {c.step for c in run.manager.checkpoints()}
    if wanted in steps:
        best = run.manager.best
        if best is not None and best.step != wanted:
            logger.warning(
                "%s: the index ranks %s %d best, the stopper %d; using the stopper's",
                run.directory, run._unit, best.step, wanted,
            )  # fmt: skip
        return wanted
    best = run.manager.best
    return None if best is None else best.step


def restore_best(run: Run) -> None:
    """Loads the best checkpoint's weights into the tracked modules (into= their memory).

    A best checkpoint that cannot be restored (damaged, missing, unreadable) is verified to be
    so before any of its bytes reaches a module: the modules keep their last weights, and a
    warning says why.
    """
    if run.stopping.best_step is None:
        return
    step = best_checkpoint(run)
    if step is None:
        return
    targets = {n: o for n, o in run._tracked.items() if hasattr(o, "parameters")}
    if not targets:
        return
    live = {name: obj.state_dict() for name, obj in targets.items()}
    try:
        if _all_on_cpu(live):
            # Read straight into the live parameters (a module's state_dict shares their memory).
            run.manager.restore(step, keys=list(targets), into=live)
        else:  # e.g. on a GPU: read to host, then copy over
            restored = run.manager.restore(step, keys=list(targets))
            for name, obj in targets.items():
                obj.load_state_dict(restored[name])
    except (CheckpointError, OSError) as err:
        logger.warning(
            "%s: the best checkpoint (%s %d) cannot be restored, the model keeps its last "
            "weights: %s",
            run.directory, run._unit, step, err,
        )  # fmt: skip
        return
    run._restored_from = step
    logger.info("%s: restored the best weights (%s %d)", run.directory, run._unit, step)


def _all_on_cpu(tree: Any) -> bool:
    if isinstance(tree, Mapping):
        return all(_all_on_cpu(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_all_on_cpu(v) for v in tree)
    device = getattr(tree, "device", None)
    return device is None or getattr(device, "type", "cpu") == "cpu"
