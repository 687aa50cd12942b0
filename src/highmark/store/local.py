"""The local-disk backend: :class:`LocalStorage`, and :func:`open_storage` choosing a run's backend.

A :class:`~highmark.store.storage.Storage` addresses files by paths relative to the run root
("/"-separated; absolute paths and ``..`` are refused, so a hostile index cannot escape the run
directory). :class:`LocalStorage` commits by writing into a staging directory, fsyncing every file
and directory and renaming; its writer lock is ``flock`` on the run directory and on ``.lock``,
released by the OS when the holder dies (:meth:`LocalStorage.lock` raises
:class:`~highmark.errors.LockedError` naming a live holder). The object-store backends (S3 and
any fsspec URL, and the in-memory double) live in :mod:`highmark.store.objectstore`, which never
imports this module; :func:`open_storage` picks one of the two for a path or URL.

On local disk nothing outside the run is ever written: a symbolic link inside the run is never
followed by a write, a rename or a delete (:mod:`highmark.store.localfs`); the run directory itself
may be a link.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from highmark.errors import ConfigError, LockedError
from highmark.store.localfs import CLOEXEC, DIR_FLAGS, NOFOLLOW, TMP_PREFIX, RunDir
from highmark.store.objectstore import FsspecStorage
from highmark.store.storage import (
    LOCK_NAME,
    Storage,
    StorageLock,
    check_relpath,
    lock_holder,
    lock_record,
)
from highmark.store.streaming import StreamingFile

__all__ = ["LocalStorage", "open_storage"]

log = logging.getLogger(__name__)


def _read_record(fd: int) -> str:
    """Who holds the lock, from the record in the lock file open at ``fd``."""
    try:
        return lock_holder(json.loads(os.pread(fd, 1 << 16, 0)))
    except (OSError, ValueError, AttributeError):
        return "another process"


class _LocalLock:
    """The writer lock of a local run: ``flock`` on the run directory and on ``RUN/.lock``.

    The OS drops both when the holder dies (never stale). The directory lock keeps a second
    writer out even when ``.lock`` is deleted or replaced; where a directory cannot be locked
    (some network filesystems) the file lock alone is the lock and :meth:`refresh` refuses to go
    on once the file is no longer the one held.
    """

    def __init__(self, run: RunDir, owner: str) -> None:
        import fcntl

        self._run = run
        self._owner = owner
        self._fd: int | None = None
        self._dir_fd: int | None = os.open(run.root, DIR_FLAGS)
        try:
            fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise LockedError(f"{self._where}: the run is locked by {self._holder()}") from None
        except OSError as err:
            log.debug("%s: cannot lock the directory (%s); locking the file alone", run.root, err)
            os.close(self._dir_fd)
            self._dir_fd = None
        try:
            self._fd = self._take_file()
        except BaseException:
            self.release()
            raise

    @property
    def _where(self) -> str:
        return self._run.path(LOCK_NAME)

    def _holder(self) -> str:
        try:
            fd = os.open(self._where, os.O_RDONLY | NOFOLLOW | CLOEXEC)
        except OSError:
            return "another process"
        try:
            return _read_record(fd)
        finally:
            os.close(fd)

    def _take_file(self) -> int:
        import fcntl

        fd = self._run.open_in_place(LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise LockedError(f"{self._where}: the run is locked by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(lock_record(self._owner, uuid.uuid4().hex)).encode(), 0)
        return fd

    def refresh(self) -> None:
        """Re-create ``.lock`` if it was deleted or replaced while held (the directory lock kept
        other writers out); without a directory lock, raise :class:`LockedError` instead."""
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.lstat(self._where)):
                return
        except FileNotFoundError:
            pass
        if self._dir_fd is None:
            raise LockedError(
                f"{self._where}: the lock file was deleted or replaced while this writer held "
                "the run, so another writer may have taken it: stop all but one writer"
            )
        log.warning("%s: the lock file was deleted or replaced; re-created it", self._where)
        held, self._fd = self._fd, None
        os.close(held)
        self._fd = self._take_file()

    def release(self) -> None:
        """Unlock (the file stays: unlinking a lock file races with a new opener); idempotent."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        dir_fd, self._dir_fd = self._dir_fd, None
        if dir_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(dir_fd, fcntl.LOCK_UN)
            os.close(dir_fd)


class LocalStorage:
    """A run directory on a local filesystem: fsync + rename commits, flock writer lock.

    Writes, renames and deletes never follow a symbolic link inside the run (a write meeting one
    raises :class:`~highmark.errors.CorruptCheckpointError` naming it); reads do.
    """

    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.url = os.fspath(root)
        self.root = os.path.abspath(self.url)
        self._dir = RunDir(self.root)

    def _path(self, rel: str) -> str:
        check_relpath(rel)
        return self._dir.path(rel)

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Open a new file ``rel`` to write in sequence; fsync on clean exit, remove it on error."""
        path = self._path(rel)
        # the disk starts writing while the caller still writes
        f = StreamingFile(path, opener=lambda _path, _flags: self._dir.create(rel))
        try:
            yield f
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            with contextlib.suppress(OSError):
                self._dir.remove(rel)
            raise
        f.close()

    def open_append(self, rel: str) -> BinaryIO:
        """Open ``rel`` in place for appending and reading (created when missing).

        Raises:
            CorruptCheckpointError: ``rel`` is a link, not a regular file or has other hard links.
        """
        fd = self._dir.open_in_place(check_relpath(rel), os.O_RDWR | os.O_APPEND)
        return open(fd, "a+b")

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
        self._dir.replace(check_relpath(rel), data)

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
        self._dir.makedirs(check_relpath(rel))

    def remove(self, rel: str) -> None:
        self._dir.remove(check_relpath(rel))

    def remove_tree(self, rel: str) -> None:
        """Remove a directory: renamed to a hidden name first, so it disappears atomically."""
        self._dir.remove_tree(check_relpath(rel))

    def free_bytes(self) -> int | None:
        probe = self.root
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        return shutil.disk_usage(probe).free

    def staging_dir(self, final: str) -> str:
        check_relpath(final)
        return f"{TMP_PREFIX}{final.replace('/', '_')}-{uuid.uuid4().hex[:8]}"

    def commit_dir(self, staging: str, final: str) -> None:
        """Fsync every file and directory under ``staging``, rename it to ``final``, fsync root.

        An existing ``final`` is moved aside first and removed after the rename; if the process
        dies between the two renames, :meth:`recover` puts the old one back.
        """
        self._dir.commit(check_relpath(staging), check_relpath(final))

    def is_committed(self, final: str) -> bool:
        return os.path.isdir(self._path(final))

    def recover(self) -> list[str]:
        """Clean leftovers of interrupted saves and deletes; returns the names removed."""
        return self._dir.recover()

    def lock(self, owner: str) -> StorageLock:
        os.makedirs(self.root, exist_ok=True)
        return _LocalLock(self._dir, owner)


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
        return FsspecStorage(text, storage_options)
    if storage_options:
        raise ConfigError(f"{text}: storage_options only apply to fsspec URLs, not local paths")
    return LocalStorage(text)
