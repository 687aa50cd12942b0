"""Storage backends: how bytes reach a local disk or an object store, atomically.

A :class:`Storage` addresses files by paths relative to the run root ("/"-separated; absolute
paths and ``..`` are refused, so a hostile index cannot escape the run directory). Each backend
declares its commit: :class:`LocalStorage` writes into a staging directory, fsyncs every file and
directory and renames; :class:`FsspecStorage` (S3 and any fsspec URL) has no rename and writes a
``COMMITTED`` marker last. :class:`MemoryStorage` is an in-process double with object-store
semantics (both live in :mod:`highmark.store.objectstore` and are re-exported here). One writer
per run: :meth:`Storage.lock` raises :class:`~highmark.errors.LockedError` naming the live holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol

from highmark.errors import ConfigError, CorruptCheckpointError, LockedError
from highmark.store.streaming import StreamingFile

if TYPE_CHECKING:
    from highmark.store.objectstore import FsspecStorage, MemoryStorage

__all__ = [
    "COMMIT_MARKER",
    "LOCK_NAME",
    "FsspecStorage",
    "LocalStorage",
    "MemoryStorage",
    "Storage",
    "StorageLock",
    "check_relpath",
    "open_storage",
]

log = logging.getLogger(__name__)

COMMIT_MARKER = "COMMITTED"
LOCK_NAME = ".lock"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
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


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _lock_holder(info: dict[str, Any]) -> str:
    when = info.get("time")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')} "
        f"(owner {info.get('owner', '?')}, since {stamp})"
    )


def _lock_record(owner: str, token: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "owner": owner,
        "time": time.time(),
        "token": token,
    }


def _pid_alive(pid: int) -> bool:
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


# --------------------------------------------------------------------------- local disk


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalLock:
    """``fcntl.flock`` on ``RUN/.lock``: the OS drops it when the holder dies (never stale)."""

    def __init__(self, path: str, owner: str) -> None:
        import fcntl

        self._path = path
        self._file: IO[str] | None = open(path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            text = self._file.read()
            self._file.close()
            self._file = None
            try:
                holder = _lock_holder(json.loads(text))
            except ValueError:
                holder = "another process"
            raise LockedError(f"{path}: the run is locked by {holder}") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(_lock_record(owner, uuid.uuid4().hex)))
        self._file.flush()

    def refresh(self) -> None:
        """Nothing to do: the OS keeps a flock for as long as the process lives."""

    def release(self) -> None:
        """Unlock (the file stays: unlinking a flock file races with a new opener)."""
        if self._file is not None:
            import fcntl

            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class LocalStorage:
    """A run directory on a local filesystem: fsync + rename commits, flock writer lock."""

    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.url = os.fspath(root)
        self.root = os.path.abspath(self.url)

    def _path(self, rel: str) -> str:
        check_relpath(rel)
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Open ``rel`` for a sequential write; fsync on clean exit, remove the file on error."""
        path = self._path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        f = StreamingFile(path)  # the disk starts writing while the caller still writes
        try:
            yield f
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        f.close()

    def open_read(self, rel: str) -> BinaryIO:
        return open(self._path(rel), "rb")

    def local_path(self, rel: str) -> str | None:
        return self._path(rel)

    def read_bytes(self, rel: str) -> bytes:
        with open(self._path(rel), "rb") as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_write(rel) as f:
            f.write(data)

    def replace_atomic(self, rel: str, data: bytes) -> None:
        """Write a temporary sibling, fsync it, rename it over ``rel``, fsync the directory."""
        path = self._path(rel)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f"{_TMP_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_path(parent, directory=True)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self._path(rel))

    def size(self, rel: str) -> int:
        return os.path.getsize(self._path(rel))

    def listdir(self, rel: str = "") -> list[str]:
        try:
            return sorted(os.listdir(self._path(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def makedirs(self, rel: str) -> None:
        os.makedirs(self._path(rel), exist_ok=True)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(rel))

    def remove_tree(self, rel: str) -> None:
        """Remove a directory: renamed to a hidden name first, so it disappears atomically."""
        path = self._path(rel)
        if not os.path.exists(path):
            return
        if "/" not in rel and not rel.startswith("."):
            trash = self._path(f"{_TMP_PREFIX}del-{rel}-{uuid.uuid4().hex[:8]}")
            os.rename(path, trash)
            _fsync_path(self.root, directory=True)
            path = trash
        shutil.rmtree(path, ignore_errors=True)

    def free_bytes(self) -> int | None:
        probe = self.root
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        return shutil.disk_usage(probe).free

    def staging_dir(self, final: str) -> str:
        check_relpath(final)
        return f"{_TMP_PREFIX}{final.replace('/', '_')}-{uuid.uuid4().hex[:8]}"

    def commit_dir(self, staging: str, final: str) -> None:
        """Fsync every file and directory under ``staging``, rename it to ``final``, fsync root.

        An existing ``final`` is moved aside first and removed after the rename; if the process
        dies between the two renames, :meth:`recover` puts the old one back.
        """
        src, dst = self._path(staging), self._path(final)
        for dirpath, _dirs, files in os.walk(src, topdown=False):
            for name in files:
                _fsync_path(os.path.join(dirpath, name))
            _fsync_path(dirpath, directory=True)
        old = None
        if os.path.exists(dst):
            old = self._path(f"{_OLD_PREFIX}{final}-{uuid.uuid4().hex[:8]}")
            os.rename(dst, old)
        os.rename(src, dst)
        _fsync_path(os.path.dirname(dst), directory=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def is_committed(self, final: str) -> bool:
        return os.path.isdir(self._path(final))

    def recover(self) -> list[str]:
        """Clean leftovers of interrupted saves and deletes; returns the names removed."""
        removed = []
        for name in self.listdir():
            path = self._path(name)
            if name.startswith(_OLD_PREFIX):
                final = name[len(_OLD_PREFIX) :].rsplit("-", 1)[0]
                if final and not os.path.exists(self._path(final)):
                    os.rename(path, self._path(final))
                    log.warning(
                        "%s: restored %s, replaced by a save that did not finish", path, final
                    )
                    continue
            elif not name.startswith(_TMP_PREFIX):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            removed.append(name)
        if removed:
            _fsync_path(self.root, directory=True)
        return removed

    def lock(self, owner: str) -> StorageLock:
        os.makedirs(self.root, exist_ok=True)
        return _LocalLock(self._path(LOCK_NAME), owner)


def open_storage(
    directory: str | os.PathLike[str] | Storage, storage_options: dict[str, Any] | None = None
) -> Storage:
    """The storage for a run: a local path (or ``file://``) -> LocalStorage, a URL -> fsspec.

    A :class:`Storage` instance passes through unchanged.
    """
    if not isinstance(directory, (str, os.PathLike)):
        return directory
    text = os.fspath(directory)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        from highmark.store.objectstore import FsspecStorage

        return FsspecStorage(text, storage_options)
    if storage_options:
        raise ConfigError(f"{text}: storage_options only apply to fsspec URLs, not local paths")
    return LocalStorage(text)


def __getattr__(name: str) -> Any:
    """Re-exports the object-store backends (kept in :mod:`highmark.store.objectstore`)."""
    if name in ("FsspecStorage", "MemoryStorage"):
        from highmark.store import objectstore

        return getattr(objectstore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
