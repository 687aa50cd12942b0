"""What every storage backend shares: the Storage protocol, run-relative paths and the lock record.

Both :mod:`highmark.store.local` (local disk) and :mod:`highmark.store.objectstore` (S3, memory)
build on this module, so neither imports the other's internals. A :class:`Storage` addresses
files by paths relative to the run root ("/"-separated; absolute paths and ``..`` are refused by
:func:`check_relpath`, so a hostile index cannot escape the run directory).
"""

from __future__ import annotations

import os
import re
import socket
import time
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Protocol

from highmark.errors import CorruptCheckpointError

__all__ = [
    "COMMIT_MARKER",
    "LOCK_NAME",
    "Storage",
    "StorageLock",
    "check_relpath",
    "join",
    "lock_holder",
    "lock_record",
    "pid_alive",
]

COMMIT_MARKER = "COMMITTED"
LOCK_NAME = ".lock"
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relpath(rel: str) -> str:
    """Validate a run-relative path: "/"-separated, not absolute, no ``..``, ``.`` or empty parts.

    Raises:
        CorruptCheckpointError: naming the path, when it could escape the run directory.
    """
    if rel == "":
        return rel
    bad = (
        not isinstance(rel, str)
        or rel.startswith(("/", "\\"))
        or "\\" in rel
        or "\x00" in rel
        or _DRIVE.match(rel) is not None
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise CorruptCheckpointError(str(rel), "path is not a plain relative path inside the run")
    return rel


def join(*parts: str) -> str:
    """Run-relative path parts joined with "/", empty parts left out."""
    return "/".join(p for p in parts if p)


def lock_holder(info: dict[str, Any]) -> str:
    """Who holds a lock, from its record, for an error message."""
    when = info.get("time")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')} "
        f"(owner {info.get('owner', '?')}, since {stamp})"
    )


def lock_record(owner: str, token: str) -> dict[str, Any]:
    """The record a lock holder leaves in ``.lock``: pid, host, owner, time and its token."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "owner": owner,
        "time": time.time(),
        "token": token,
    }


def pid_alive(pid: int) -> bool:
    """Whether a process with this id lives on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StorageLock(Protocol):
    """A held writer lock on a run."""

    def refresh(self) -> None:
        """Tell other writers the holder is still alive (object stores: rewrite the timestamp)."""

    def release(self) -> None:
        """Give the lock up; idempotent."""


class Storage(Protocol):
    """How bytes move: the small interface the checkpoint format and the manager write through."""

    url: str
    is_local: bool

    def open_write(self, rel: str) -> AbstractContextManager[BinaryIO]: ...
    def open_read(self, rel: str) -> BinaryIO: ...
    def local_path(self, rel: str) -> str | None: ...
    def read_bytes(self, rel: str) -> bytes: ...
    def write_bytes(self, rel: str, data: bytes) -> None: ...
    def replace_atomic(self, rel: str, data: bytes) -> None: ...
    def exists(self, rel: str) -> bool: ...
    def size(self, rel: str) -> int: ...
    def listdir(self, rel: str = "") -> list[str]: ...
    def makedirs(self, rel: str) -> None: ...
    def remove(self, rel: str) -> None: ...
    def remove_tree(self, rel: str) -> None: ...
    def free_bytes(self) -> int | None: ...
    def staging_dir(self, final: str) -> str: ...
    def commit_dir(self, staging: str, final: str) -> None: ...
    def is_committed(self, final: str) -> bool: ...
    def recover(self) -> list[str]: ...
    def lock(self, owner: str) -> StorageLock: ...
