"""The loop a :class:`~highmark.Run` drives: epochs/steps, their boundaries, preemption, the end.

:func:`start` backs :meth:`Run.epochs` and :meth:`Run.steps`. Between two epochs/steps (a
*boundary*) a pending signal is honoured or the save a report asked for is written; when the loop
ends for any reason, :func:`finish` writes what is still owed, restores the best weights and
records the run's status.
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

if TYPE_CHECKING:
    from highmark.run.core import Run

__all__ = ["boundary", "finish", "interrupt", "loader_boundary", "record_exit", "start"]

logger = logging.getLogger("highmark.run.core")  # one logger name for everything a Run says


def start(run: Run, unit: str, budget: int) -> Iterator[int]:
    """Checks the loop may start (eagerly) and returns its iterator of epoch/step numbers."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"max_{unit}s must be an int >= 0, got {budget!r}")
    if run._unit is not None:
        raise ConfigError("a Run drives one loop; make a new Run (resume=True) to continue")
    if run._closed:
        raise ConfigError("this Run is closed")
    run._unit, run._budget = unit, budget
    note = patience_budget_note(run.stopping, budget, unit)
    if note is not None:
        logger.warning("%s: %s", run.directory, note)
    return _iterate(run, unit, budget)


def _iterate(run: Run, unit: str, budget: int) -> Iterator[int]:
    try:
        _begin(run)
    except BaseException:  # nothing ran: leave the directory (run.json too) as it was
        run._finished = True
        run._signals.uninstall()
        raise
    run._began = True
    status = "interrupted"
    try:
        while True:
            boundary(run)
            if run.stopping.should_stop:
                break
            if run._done >= budget:
                break
            run._current = run._done
            if unit == "epoch" and not run._resume_partial:
                for ld in run._loaders.values():
                    ld.end_pass()
            run._resume_partial = False
            run._in_body = True
            yield run._current
            run._in_body = False
            run._done += 1
        status = "stopped" if run.stopping.should_stop else "budget"
    finally:
        if run._in_body and run._reported == run._current:
            run._done += 1  # left after its report (break, exception): the unit counts
        run._in_body = False
        if not run._finished:
            finish(run, status)
        run.close()  # release the directory's lock as soon as the loop is over


def _begin(run: Run) -> None:
    from highmark.run.resume import resume_run

    if run.handle_signals:
        run._signals.install()
    info = None
    if run.resume:
        info = resume_run(run)
    elif run.manager.latest is not None:
        raise ConfigError(
            f"{run.directory} already holds checkpoints and resume=False: remove the "
            "directory (or choose another) to start over, or pass resume=True to continue"
        )
    if info is None:
        run._history.truncate(0)
    run._write_run_info()


def record_exit(run: Run, exc_type: type[BaseException]) -> None:
    """Records in run.json that the loop ended by an exception (``failed`` or ``interrupted``).

    Nothing is written when the loop never began (its start, e.g. the resume, failed): the
    directory then keeps the run.json of its earlier sessions untouched.
    """
    if not run._began or run._signalled:
        return
    stopped = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
    status = "interrupted" if stopped else "failed"
    if not run._finished:
        finish(run, status)
    else:
        run._status = status
        run._write_run_info()


def boundary(run: Run) -> None:
    """Runs between two epochs/steps: a pending signal (its save covers a pending one), or the
    save a report asked for."""
    if run._signals.received is not None:
        interrupt(run, run._signals.received)
    if run._pending is not None:
        saving.save(run, run._pending)


def loader_boundary(run: Run) -> None:
    """Runs after each batch of a :meth:`Run.loader`: in an epoch loop, honours a signal."""
    run._batches += 1
    if run._unit == "epoch" and run._in_body and run._signals.received is not None:
        interrupt(run, run._signals.received)


def interrupt(run: Run, signum: int) -> None:
    """Saves (mid-epoch when in a body), finishes the run and exits with the signal's status."""
    partial = run._in_body
    run._signalled = True
    saving.save(run, "interrupt", partial=partial)
    run._status = "interrupted"
    finish(run, "interrupted")
    where = f"{run._unit} {run._current if partial else run._done - 1}"
    logger.warning(
        "%s received: saved a checkpoint at %s in %s and exited. To resume, run the same "
        "script again (Run(..., resume=True) continues from the latest checkpoint).",
        signal_name(signum),
        where,
        run.directory,
    )
    run.close()
    raise SystemExit(128 + signum if signum != signal.SIGINT else 130)


def finish(run: Run, status: str) -> None:
    """Ends the loop once: the save still owed, waiting for saves, restore_best, run.json."""
    if run._finished:
        return
    run._finished = True
    run._in_body = False
    try:
        if status != "failed" and run._pending is not None:
            saving.save(run, run._pending)
        elif status in ("stopped", "budget") and run._last_saved != run._done > 0:
            saving.save(run, "final")
        run.manager.wait()
        if run._status != "interrupted":
            run._status = status
        if run.restore_best:
            saving.restore_best(run)
    finally:
        run._signals.uninstall()
        run._summary_cache = run._summary_data()
        run._write_run_info()
