"""Storage backends: how bytes reach a local disk or an object store, atomically.

A :class:`Storage` addresses files by paths relative to the run root ("/"-separated; absolute
paths and ``..`` are refused, so a hostile index cannot escape the run directory). Each backend
declares its commit: :class:`LocalStorage` writes into a staging directory, fsyncs every file and
directory and renames; :class:`FsspecStorage` (S3 and any fsspec URL) has no rename and writes a
``COMMITTED`` marker last. :class:`MemoryStorage` is an in-process double with object-store
semantics. One writer per run: :meth:`Storage.lock` raises :class:`~highmark.errors.LockedError`
naming the live holder.
"""

from __future__ import annotations

import contextlib
import io
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
from typing import IO, Any, BinaryIO, Protocol, cast

from highmark.errors import ConfigError, CorruptCheckpointError, LockedError

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
        f = open(path, "wb")  # noqa: SIM115
        try:
            yield f
            f.flush()
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


# --------------------------------------------------------------------------- object stores


class _ObjectLock:
    """A lock object (host, pid, time) on a store without locks; stale when dead or expired."""

    def __init__(self, storage: FsspecStorage | MemoryStorage, owner: str, ttl: float) -> None:
        self._storage = storage
        self._owner = owner
        self._token = uuid.uuid4().hex
        self._held = False
        if storage.exists(LOCK_NAME):
            try:
                info = json.loads(storage.read_bytes(LOCK_NAME))
            except (ValueError, OSError):
                info = {}
            if not self._stale(info, ttl):
                raise LockedError(f"{storage.url}: the run is locked by {_lock_holder(info)}")
            log.warning("%s: taking over a stale lock of %s", storage.url, _lock_holder(info))
        self.refresh()
        check = json.loads(storage.read_bytes(LOCK_NAME))
        if check.get("token") != self._token:  # lost a race with another writer
            raise LockedError(f"{storage.url}: the run is locked by {_lock_holder(check)}")

    @staticmethod
    def _stale(info: dict[str, Any], ttl: float) -> bool:
        if not info:
            return True
        same_host = info.get("host") == socket.gethostname()
        if same_host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
            return True
        return bool(time.time() - float(info.get("time", 0.0)) > ttl)

    def refresh(self) -> None:
        """Rewrite the lock object with the current time (the holder calls this on every save)."""
        record = _lock_record(self._owner, self._token)
        self._storage.replace_atomic(LOCK_NAME, json.dumps(record).encode())
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self._storage.read_bytes(LOCK_NAME)).get("token") == self._token:
                self._storage.remove(LOCK_NAME)


class FsspecStorage:
    """A run under any fsspec URL (``s3://bucket/run``): no rename, a marker written last."""

    is_local = False

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, lock_ttl: float = 3600.0
    ) -> None:
        import fsspec

        self.url = url
        self.lock_ttl = lock_ttl
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = str(root).rstrip("/")

    def _path(self, rel: str) -> str:
        check_relpath(rel)
        return _join(self.root, rel) if rel else self.root

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Open ``rel`` for writing; on error abort the upload and remove what was written."""
        path = self._path(rel)
        f = self.fs.open(path, "wb")
        try:
            yield cast(BinaryIO, f)
        except BaseException:
            for cleanup in (getattr(f, "discard", None), f.close, lambda: self.fs.rm(path)):
                with contextlib.suppress(Exception):
                    if cleanup is not None:
                        cleanup()
            raise
        f.close()

    def open_read(self, rel: str) -> BinaryIO:
        return cast(BinaryIO, self.fs.open(self._path(rel), "rb"))

    def local_path(self, rel: str) -> str | None:
        return None

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(rel), data)

    def replace_atomic(self, rel: str, data: bytes) -> None:
        """A single PUT: object stores replace an object atomically."""
        self.fs.pipe_file(self._path(rel), data)

    def exists(self, rel: str) -> bool:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def size(self, rel: str) -> int:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return int(self.fs.size(path))

    def listdir(self, rel: str = "") -> list[str]:
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        own = path.rstrip("/")
        return sorted(
            {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries if str(e).rstrip("/") != own}
        )

    def makedirs(self, rel: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.makedirs(self._path(rel), exist_ok=True)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(rel))

    def remove_tree(self, rel: str) -> None:
        """Remove the commit marker first, so a half-removed checkpoint is never seen committed."""
        if self.exists(_join(rel, COMMIT_MARKER)):
            self.remove(_join(rel, COMMIT_MARKER))
        path = self._path(rel)
        s3 = hasattr(self.fs, "call_s3")
        dirs = [path]
        if s3:  # filer-backed S3 servers (SeaweedFS) keep empty "dir/" entries: remove them too
            found = self.fs.find(path, withdirs=True, detail=True)
            dirs += [p for p, info in found.items() if info.get("type") == "directory"]
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        if s3:
            for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
                bucket, key, _ = self.fs.split_path(d)
                with contextlib.suppress(Exception):
                    self.fs.call_s3("delete_object", Bucket=bucket, Key=key.rstrip("/") + "/")
        self.fs.invalidate_cache(path)

    def free_bytes(self) -> int | None:
        return None

    def staging_dir(self, final: str) -> str:
        return check_relpath(final)

    def commit_dir(self, staging: str, final: str) -> None:
        if staging != final:
            raise ConfigError(f"{self.url}: object stores commit in place ({staging} != {final})")
        self.write_bytes(_join(final, COMMIT_MARKER), json.dumps({"time": time.time()}).encode())

    def is_committed(self, final: str) -> bool:
        return self.exists(_join(final, COMMIT_MARKER))

    def recover(self) -> list[str]:
        """Nothing to do at the storage level: uncommitted dirs are found by the manager."""
        return []

    def lock(self, owner: str) -> StorageLock:
        return _ObjectLock(self, owner, self.lock_ttl)


class MemoryStorage:
    """An in-process storage with object-store semantics (marker commit), for tests."""

    is_local = False

    def __init__(self, url: str = "memory://run", lock_ttl: float = 3600.0) -> None:
        self.url = url
        self.lock_ttl = lock_ttl
        self.files: dict[str, bytes] = {}

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        check_relpath(rel)
        buf = io.BytesIO()
        yield buf
        self.files[rel] = buf.getvalue()

    def open_read(self, rel: str) -> BinaryIO:
        return io.BytesIO(self.read_bytes(rel))

    def local_path(self, rel: str) -> str | None:
        return None

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.files[check_relpath(rel)]
        except KeyError:
            raise FileNotFoundError(f"{self.url}/{rel}") from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.files[check_relpath(rel)] = bytes(data)

    def replace_atomic(self, rel: str, data: bytes) -> None:
        self.write_bytes(rel, data)

    def exists(self, rel: str) -> bool:
        check_relpath(rel)
        return rel in self.files or any(k.startswith(rel + "/") for k in self.files)

    def size(self, rel: str) -> int:
        return len(self.read_bytes(rel))

    def listdir(self, rel: str = "") -> list[str]:
        prefix = check_relpath(rel) + "/" if rel else ""
        return sorted(
            {k[len(prefix) :].split("/", 1)[0] for k in self.files if k.startswith(prefix)}
        )

    def makedirs(self, rel: str) -> None:
        check_relpath(rel)

    def remove(self, rel: str) -> None:
        self.files.pop(check_relpath(rel), None)

    def remove_tree(self, rel: str) -> None:
        prefix = check_relpath(rel) + "/"
        self.files.pop(prefix + COMMIT_MARKER, None)
        for key in [k for k in self.files if k.startswith(prefix) or k == rel]:
            del self.files[key]

    def free_bytes(self) -> int | None:
        return None

    def staging_dir(self, final: str) -> str:
        return check_relpath(final)

    def commit_dir(self, staging: str, final: str) -> None:
        self.write_bytes(_join(final, COMMIT_MARKER), b"{}")

    def is_committed(self, final: str) -> bool:
        return _join(check_relpath(final), COMMIT_MARKER) in self.files

    def recover(self) -> list[str]:
        return []

    def lock(self, owner: str) -> StorageLock:
        return _ObjectLock(self, owner, self.lock_ttl)


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
