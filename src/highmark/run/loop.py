"""The loop a :class:`~highmark.Run` drives: epochs/steps, their boundaries, preemption, the end.

:func:`start` backs :meth:`Run.epochs` and :meth:`Run.steps`, :func:`close` :meth:`Run.close`.
Between two epochs/steps (a *boundary*) a pending signal is honoured or the save a report asked
for is written; when the loop ends for any reason, :func:`finish` writes what is still owed,
restores the best weights and records the run's status. Every function takes the run's
:class:`~highmark.run.state.RunState`.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

from highmark.errors import ConfigError
from highmark.run import saving
from highmark.run.defaults import patience_budget_note
from highmark.run.signals import signal_name
from highmark.run.summary import summary_data, write_run_info

if TYPE_CHECKING:
    from highmark.run.state import RunState

__all__ = ["boundary", "close", "finish", "interrupt", "loader_boundary", "record_exit", "start"]

logger = logging.getLogger("highmark.run.core")  # one logger name for everything a Run says


def start(state: RunState, unit: str, budget: int) -> Iterator[int]:
    """Checks the loop may start (eagerly) and returns its iterator of epoch/step numbers."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"max_{unit}s must be an int >= 0, got {budget!r}")
    if state.unit is not None:
        raise ConfigError("a Run drives one loop; make a new Run (resume=True) to continue")
    if state.closed:
        raise ConfigError("this Run is closed")
    state.unit, state.budget = unit, budget
    note = patience_budget_note(state.stopping, budget, unit)
    if note is not None:
        logger.warning("%s: %s", state.directory, note)
    return _iterate(state, unit, budget)


def _iterate(state: RunState, unit: str, budget: int) -> Iterator[int]:
    try:
        _begin(state)
    except BaseException:  # nothing ran: leave the directory (run.json too) as it was
        state.finished = True
        state.signals.uninstall()
        raise
    state.began = True
    status = "interrupted"
    try:
        while True:
            boundary(state)
            if state.stopping.should_stop:
                break
            if state.done >= budget:
                break
            state.current = state.done
            if unit == "epoch" and not state.resume_partial:
                for ld in state.loaders.values():
                    ld.end_pass()
            state.resume_partial = False
            state.in_body = True
            yield state.current
            state.in_body = False
            state.done += 1
        status = "stopped" if state.stopping.should_stop else "budget"
    finally:
        if state.in_body and state.reported == state.current:
            state.done += 1  # left after its report (break, exception): the unit counts
        state.in_body = False
        if not state.finished:
            finish(state, status)
        close(state)  # release the directory's lock as soon as the loop is over


def _begin(state: RunState) -> None:
    from highmark.run.resume import resume_run

    if state.handle_signals:
        state.signals.install()
    info = None
    if state.resume:
        info = resume_run(state)
    elif state.manager.latest is not None:
        raise ConfigError(
            f"{state.directory} already holds checkpoints and resume=False: remove the "
            "directory (or choose another) to start over, or pass resume=True to continue"
        )
    if info is None:
        state.history.truncate(0)
    write_run_info(state)


def record_exit(state: RunState, exc_type: type[BaseException]) -> None:
    """Records in run.json that the loop ended by an exception (``failed`` or ``interrupted``).

    Nothing is written when the loop never began (its start, e.g. the resume, failed): the
    directory then keeps the run.json of its earlier sessions untouched.
    """
    if not state.began or state.signalled:
        return
    stopped = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
    status = "interrupted" if stopped else "failed"
    if not state.finished:
        finish(state, status)
    else:
        state.status = status
        write_run_info(state)


def boundary(state: RunState) -> None:
    """Runs between two epochs/steps: a pending signal (its save covers a pending one), or the
    save a report asked for."""
    if state.signals.received is not None:
        interrupt(state, state.signals.received)
    if state.pending is not None:
        saving.save(state, state.pending)


def loader_boundary(state: RunState) -> None:
    """Runs after each batch of a :meth:`Run.loader`: in an epoch loop, honours a signal."""
    state.batches += 1
    if state.unit == "epoch" and state.in_body and state.signals.received is not None:
        interrupt(state, state.signals.received)


def interrupt(state: RunState, signum: int) -> None:
    """Saves (mid-epoch when in a body), finishes the run and exits with the signal's status."""
    partial = state.in_body
    state.signalled = True
    saving.save(state, "interrupt", partial=partial)
    state.status = "interrupted"
    finish(state, "interrupted")
    where = f"{state.unit} {state.current if partial else state.done - 1}"
    logger.warning(
        "%s received: saved a checkpoint at %s in %s and exited. To resume, run the same "
        "script again (Run(..., resume=True) continues from the latest checkpoint).",
        signal_name(signum),
        where,
        state.directory,
    )
    close(state)
    raise SystemExit(128 + signum if signum != signal.SIGINT else 130)


def finish(state: RunState, status: str) -> None:
    """Ends the loop once: the save still owed, waiting for saves, restore_best, run.json."""
    if state.finished:
        return
    state.finished = True
    state.in_body = False
    try:
        if status != "failed" and state.pending is not None:
            saving.save(state, state.pending)
        elif status in ("stopped", "budget") and state.last_saved != state.done > 0:
            saving.save(state, "final")
        state.manager.wait()
        if state.status != "interrupted":
            state.status = status
        if state.restore_best:
            saving.restore_best(state)
    finally:
        state.signals.uninstall()
        state.summary_cache = summary_data(state)
        write_run_info(state)


def close(state: RunState) -> None:
    """Ends the run: finishes a loop that is still open, waits for saves, releases the lock."""
    if state.closed:
        return
    try:
        if state.began and not state.finished:
            finish(state, "interrupted")
    finally:
        state.closed = True
        state.signals.uninstall()
        for handle in state.fences:
            handle.remove()
        state.manager.close()
