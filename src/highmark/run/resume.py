"""Resuming a :class:`~highmark.Run` from the latest intact checkpoint of its directory."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from highmark.errors import ConfigError
from highmark.store.runfiles import HISTORY_FILE, RUN_FILE, parse_history, parse_run_info

if TYPE_CHECKING:
    from highmark.run.state import RunState

__all__ = ["resume_run"]

logger = logging.getLogger(__name__)


def _same_policy(saved: str, current: dict[str, Any]) -> bool:
    return bool(json.loads(saved) == json.loads(json.dumps(current, allow_nan=True, default=str)))


def _previous_info(state: RunState) -> dict[str, Any] | None:
    storage = state.manager.storage
    if not storage.exists(RUN_FILE):
        return None
    try:
        return parse_run_info(storage.read_bytes(RUN_FILE))
    except Exception:  # an unreadable run.json never blocks a resume; it is rewritten
        logger.warning("%s: could not read the previous run.json", state.directory, exc_info=True)
        return None


def _replay_history(state: RunState, count: int) -> None:
    """Feeds the recorded evaluations to a changed stopping policy, as if it had run all along."""
    storage = state.manager.storage
    records = []
    if storage.exists(HISTORY_FILE):
        records = parse_history(storage.read_bytes(HISTORY_FILE))[:count]
    state.stopping.reset()
    for record in records:
        metrics = {k: v for k, v in record["metrics"].items() if v is not None}
        state.stopping.update(metrics, step=record["step"])


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    if shape is None or isinstance(value, (int, float)):
        return None
    return tuple(int(d) for d in shape)


def shape_mismatches(saved: Any, live: Any, path: str) -> list[str]:
    """Where a saved tensor's shape differs from the live one's: ``"key: [4, 3] vs [2, 3]"``.

    Walks both state trees along the keys they share (nested mappings, lists and tuples).
    """
    if isinstance(saved, Mapping) and isinstance(live, Mapping):
        out: list[str] = []
        for key in saved:
            if key in live:
                out += shape_mismatches(saved[key], live[key], f"{path}.{key}")
        return out
    if isinstance(saved, (list, tuple)) and isinstance(live, (list, tuple)):
        pairs = zip(saved, live, strict=False)
        return [m for i, (s, v) in enumerate(pairs) for m in shape_mismatches(s, v, f"{path}.{i}")]
    mine, theirs = _shape(saved), _shape(live)
    if mine is None or theirs is None or mine == theirs:
        return []
    return [f"{path} is {list(mine)} in the checkpoint but {list(theirs)} now"]


def _load_tracked(state: RunState, saved: Mapping[str, Any], step: int) -> None:
    """Loads each tracked object's state, after checking that every saved tensor fits.

    Raises:
        ConfigError: a tensor's shape differs (naming the key and both shapes), or an object
            refuses its state; nothing is loaded when a shape differs.
    """
    where = f"{state.directory}: the checkpoint of {state.unit} {step}"
    advice = (
        "To continue this run, track the objects it was trained with; to train these from "
        "scratch, give the Run a new directory (resume=False also refuses a directory that "
        "holds checkpoints)."
    )
    bad = [
        m
        for name, obj in state.tracked.items()
        for m in shape_mismatches(saved[name], obj.state_dict(), name)
    ]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ConfigError(f"{where} does not fit: {'; '.join(bad[:3])}{more}. {advice}")
    for name, obj in state.tracked.items():
        try:
            obj.load_state_dict(saved[name])
        except (RuntimeError, ValueError, KeyError) as exc:
            why = " ".join(str(exc).split()).rstrip(".")  # torch's message spans lines
            raise ConfigError(f"{where} does not load into {name!r}: {why}. {advice}") from exc


def _clear_stop(state: RunState, step: int) -> None:
    state.stopping.continue_after_stop(step)


def _decide_continuation(state: RunState, hm: dict[str, Any], step: int, changed: bool) -> None:
    """Whether a run that had stopped (or used up its budget) continues in this session.

    Only a larger budget or a changed stopping policy continues it; otherwise the loop ends at
    once and the summary says the run was already over.
    """
    budget, old_budget = state.budget or 0, int(hm["budget"] or 0)
    unit = state.unit
    if state.stopping.should_stop:
        if budget > old_budget or changed:
            why = (
                f"budget raised from {old_budget} to {budget} {unit}s"
                if budget > old_budget
                else "the stopping policy changed"
            )
            state.continued = f"continued after it had stopped ({why})"
            _clear_stop(state, max(step, 0))
            logger.info("%s: the run had stopped; %s", state.directory, state.continued)
        else:
            state.already_over = f"had already stopped at {unit} {state.stopping.stopped_step}"
            logger.info(
                "%s: the run %s (%s); nothing to do. Pass a larger max_%ss or a new stopping "
                "policy to continue it.",
                state.directory,
                state.already_over,
                state.stopping.reason,
                unit,
            )
    elif changed:
        state.continued = "continued with a changed stopping policy"
    elif state.done >= old_budget and budget > old_budget:
        state.continued = (
            f"continued after its budget ran out (raised from {old_budget} to {budget})"
        )
    if not state.stopping.should_stop and state.done >= budget:
        state.already_over = f"had already run its budget of {budget} {unit}s"
        logger.info(
            "%s: the run %s; pass a larger max_%ss to continue.",
            state.directory,
            state.already_over,
            unit,
        )


def resume_run(state: RunState) -> dict[str, Any] | None:
    """Restores a run (``state``) from the latest intact checkpoint; returns the checkpoint's run
    state (its ``highmark`` key) or None when there is none.

    Loads every tracked object, the stopper, the counters, the loaders' positions, the history
    length and, last, the RNG states. Decides whether a run that had stopped (or used up its
    budget) continues: only with a larger budget or a changed stopping policy.
    """
    from highmark.state.torch import restore_rng

    manager = state.manager
    if manager.latest is None:
        return None
    saved = manager.restore("latest", fallback=True)
    hm = saved.get("highmark") if isinstance(saved, dict) else None
    if not isinstance(hm, dict):
        raise ConfigError(
            f"{state.directory}: the latest checkpoint was not written by highmark.Run "
            "(no 'highmark' state); use another directory or resume=False"
        )
    if hm.get("version") != 1:
        raise ConfigError(f"{state.directory}: unknown Run state version {hm.get('version')!r}")
    if hm["unit"] != state.unit:
        raise ConfigError(
            f"{state.directory}: the run was driven by run.{hm['unit']}s(), "
            f"not run.{state.unit}s(); resume it the same way"
        )
    missing = sorted(set(state.tracked) - set(saved))
    if missing:
        raise ConfigError(f"{state.directory}: the checkpoint holds no state for {missing}")
    extra = sorted(set(saved) - set(state.tracked) - {"highmark"})
    if extra:
        logger.warning(
            "%s: checkpoint state for %s is not tracked; ignored", state.directory, extra
        )
    step = int(hm["step"])
    _load_tracked(state, saved, step)
    changed = not _same_policy(hm["policy"], state.stopping.config())
    if changed and state.stopping.lr_schedule is None:
        _replay_history(state, int(hm["history_len"]))
    else:
        state.stopping.load_state_dict(hm["stopping"])
    state.done = int(hm["done"])
    state.reported = hm["reported"]
    state.evaluations = int(hm["evaluations"])
    state.batches = int(hm["batches"])
    state.history_len = int(hm["history_len"])
    state.best_metrics = hm["best_metrics"]
    state.resume_partial = bool(hm["partial"])
    for name, loader_state in hm["loaders"].items():
        if name in state.loaders:
            state.loaders[name].load_state_dict(loader_state)
        else:
            state.loader_states[name] = loader_state
    state.history.truncate(state.history_len)

    _decide_continuation(state, hm, step, changed)

    previous = _previous_info(state) or {}
    state.wall_before = float(previous.get("wall_time") or 0.0)
    state.started = float(previous.get("started") or state.started)
    state.resumed = list(previous.get("resumed") or [])
    state.resumed.append({"from_step": step, "at": time.time()})
    state.resumed_from = step
    state.last_saved = state.done
    manager.protect(step, "the run resumed from it")
    best = state.stopping.best_step
    if best is not None and best != step:
        manager.protect(best, "the stopper's best")
    restore_rng(hm["rng"])
    logger.info("%s: resumed from the checkpoint of %s %d", state.directory, state.unit, step)
    return hm
