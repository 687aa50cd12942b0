"""The one exception hierarchy of highmark.

Every error subclasses :class:`HighmarkError` *and* the builtin a user would
already catch for that kind of problem (``ValueError``, ``KeyError``,
``TypeError``, ``FileNotFoundError``, ``OSError``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "CorruptCheckpointError",
    "HighmarkError",
    "IncompatibleFormatError",
    "InsufficientSpaceError",
    "LockedError",
    "MetricNotFoundError",
    "ReadOnlyError",
    "StateChangedError",
    "UnsupportedStateError",
]


class HighmarkError(Exception):
    """Base class of every error raised by highmark."""


class ConfigError(HighmarkError, ValueError):
    """A bad argument or combination of arguments, raised at construction."""


class MetricNotFoundError(HighmarkError, KeyError):
    """The monitored metric is missing from the metrics that were reported."""

    def __init__(self, key: str, available: Iterable[str]) -> None:
        self.key = key
        self.available = sorted(str(k) for k in available)
        super().__init__(key)

    def __str__(self) -> str:
        given = ", ".join(repr(k) for k in self.available) or "none"
        return f"metric {self.key!r} not found in the reported metrics (given: {given})"


class UnsupportedStateError(HighmarkError, TypeError):
    """A value in a state tree that highmark cannot store; names the key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path or '<root>'}: {message}")


class CheckpointError(HighmarkError):
    """Base class of errors about checkpoints and runs on storage."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The requested checkpoint (or run) does not exist."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is damaged, truncated, hostile or missing; names the file."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class IncompatibleFormatError(CheckpointError):
    """The run was written in a format version this highmark does not know."""


class LockedError(CheckpointError):
    """Another live writer holds the run directory."""


class InsufficientSpaceError(CheckpointError, OSError):
    """The storage cannot hold the checkpoint about to be written."""


class ReadOnlyError(CheckpointError, OSError):
    """A writer cannot open the run directory: read-only storage, or no permission to write.

    Keeps the ``errno`` of the :class:`OSError` it replaces; says how to read the run anyway.
    """

    ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

    def __init__(self, url: str, cause: OSError) -> None:
        code = cause.errno if cause.errno is not None else errno.EROFS
        what = "is on read-only storage" if code == errno.EROFS else "is not writable"
        super().__init__(
            code,
            f"{url} {what} ({os.strerror(code)}): a writer must create its lock file there. "
            f"To read the run, open it with CheckpointManager({url!r}, read_only=True) or "
            f"the command line (highmark ls {url}); to train, choose a writable directory",
        )
        self.url = url

    def __str__(self) -> str:
        return str(self.strerror)


class StateChangedError(CheckpointError):
    """A tensor changed while a deferred async save was still copying it; that save was dropped.

    Names the tensors' key paths. Nothing of that save was written; earlier checkpoints are
    intact. Call ``fence()`` (or let the hooks a :class:`~highmark.Run` installs do it) before
    changing a state whose save is in flight.
    """

    def __init__(self, step: int, names: list[str]) -> None:
        self.step = step
        self.names = names
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        super().__init__(
            f"step {step} was not saved: {shown} changed while its deferred snapshot was being "
            "taken; call fence() before changing the saved state"
        )


def add_note(err: BaseException, note: str) -> None:  # not in __all__: highmark's own helper
    """Adds ``note`` to ``err`` (``err.add_note`` on Python >= 3.11, the same ``__notes__`` list on
    3.10): how highmark says what was being done when an error passes through it."""
    adder = getattr(err, "add_note", None)
    if adder is not None:
        adder(note)
    else:  # pragma: no cover - Python 3.10
        notes = list(getattr(err, "__notes__", []))
        notes.append(note)
        err.__notes__ = notes  # type: ignore[attr-defined]
