"""Object-store backends: any fsspec URL (S3 and friends) and an in-memory double.

Object stores have no rename: a checkpoint directory is written in place and committed by a
``COMMITTED`` marker written last; removing one deletes the marker first. There is no lock
primitive either: the writer lock is an object (host, pid, time) that is stale when its holder is
a dead process on this host or older than a TTL the holder refreshes on every save.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from highmark.errors import ConfigError, LockedError
from highmark.store.storage import (
    COMMIT_MARKER,
    LOCK_NAME,
    StorageLock,
    check_relpath,
    join,
    lock_holder,
    lock_record,
    pid_alive,
)

__all__ = ["FsspecStorage", "MemoryStorage"]

log = logging.getLogger(__name__)


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
                raise LockedError(f"{storage.url}: the run is locked by {lock_holder(info)}")
            log.warning("%s: taking over a stale lock of %s", storage.url, lock_holder(info))
        self.refresh()
        check = json.loads(storage.read_bytes(LOCK_NAME))
        if check.get("token") != self._token:  # lost a race with another writer
            raise LockedError(f"{storage.url}: the run is locked by {lock_holder(check)}")

    @staticmethod
    def _stale(info: dict[str, Any], ttl: float) -> bool:
        if not info:
            return True
        same_host = info.get("host") == socket.gethostname()
        if same_host and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
            return True
        return bool(time.time() - float(info.get("time", 0.0)) > ttl)

    def refresh(self) -> None:
        """Rewrite the lock object with the current time (the holder calls this on every save).

        Raises:
            LockedError: another writer took the lock over meanwhile (the object was deleted or
                this holder was quiet for longer than the TTL); stop all but one writer.
        """
        if self._held:
            try:
                current = json.loads(self._storage.read_bytes(LOCK_NAME))
            except (ValueError, OSError):
                current = {}  # deleted (or torn): nobody else holds it now
            if isinstance(current, dict) and current and current.get("token") != self._token:
                raise LockedError(
                    f"{self._storage.url}: the lock was taken over by {lock_holder(current)} "
                    "while this writer held the run: stop all but one writer"
                )
        record = lock_record(self._owner, self._token)
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
        return join(self.root, rel) if rel else self.root

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
        if self.exists(join(rel, COMMIT_MARKER)):
            self.remove(join(rel, COMMIT_MARKER))
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
        self.write_bytes(join(final, COMMIT_MARKER), json.dumps({"time": time.time()}).encode())

    def is_committed(self, final: str) -> bool:
        return self.exists(join(final, COMMIT_MARKER))

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
        self.write_bytes(join(final, COMMIT_MARKER), b"{}")

    def is_committed(self, final: str) -> bool:
        return join(check_relpath(final), COMMIT_MARKER) in self.files

    def recover(self) -> list[str]:
        return []

    def lock(self, owner: str) -> StorageLock:
        return _ObjectLock(self, owner, self.lock_ttl)
