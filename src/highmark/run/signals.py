"""Preemption handling: SIGTERM, SIGINT and SIGUSR1 ask the run to save and exit cleanly.

Schedulers send SIGTERM (Kubernetes, most clusters) or SIGUSR1 (Slurm's ``--signal``) some time
before they kill a job, and Ctrl-C sends SIGINT. :class:`SignalCatcher` only records such a request;
the run acts on it at the next step boundary, where the state is consistent: it saves a checkpoint
and exits. A second SIGINT while a request is pending aborts at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SignalCatcher", "signal_name"]

logger = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _catchable() -> tuple[signal.Signals, ...]:
    names = ("SIGTERM", "SIGINT", "SIGUSR1")
    return tuple(getattr(signal, n) for n in names if hasattr(signal, n))


def signal_name(signum: int) -> str:
    """The name of a signal number, e.g. ``"SIGTERM"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalCatcher:
    """Records SIGTERM / SIGINT / SIGUSR1 as a request to stop at the next step boundary.

    Handlers are installed only from the main thread (Python allows no other) and the previous
    handlers are put back by :meth:`uninstall`.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[signal.Signals, _Handler] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place."""
        return bool(self._previous)

    def install(self) -> bool:
        """Installs the handlers; returns False (and installs nothing) off the main thread."""
        if self._previous:
            return True
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: SIGTERM/SIGINT/SIGUSR1 are not handled")
            return False
        for sig in _catchable():
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def uninstall(self) -> None:
        """Puts the previous handlers back."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            _log_soon("second interrupt: aborting at once, without saving")
            self.uninstall()
            error = KeyboardInterrupt()
            if hasattr(error, "add_note"):  # Python >= 3.11
                error.add_note("highmark: second interrupt, aborted at once without saving")
            raise error
        if self.received is None:
            self.received = signum
            _log_soon(
                f"received {signal_name(signum)}: the run will save a checkpoint at the next step "
                "boundary and exit (press Ctrl-C again to abort at once)"
            )


def _log_soon(message: str) -> None:
    # A signal handler runs between two bytecodes of the main thread, possibly in the middle of
    # a write to the very stream a log handler writes to (a re-entrant write raises
    # RuntimeError). Logging from a short-lived thread waits for that write to finish instead.
    threading.Thread(target=logger.warning, args=(message,), name="highmark-signal-log").start()
