"""Local-disk primitives that never follow a symbolic link inside a run directory.

The run root is opened by its path, so it may itself be a link (``runs -> /data/runs``); every
name below it is reached from the directory above it by file descriptor, with ``O_NOFOLLOW``.
A write, a rename into place or an open in place (the lock, the history) that meets a link inside
the run is refused with :class:`~highmark.errors.CorruptCheckpointError` naming the link, before
anything is written; a delete removes a link itself, never what it points to. Files written anew
get a new inode (an existing one is unlinked first), and the two files written in place refuse
to be opened while they have other hard links, so nothing outside the run is ever written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator

from highmark.errors import CorruptCheckpointError

__all__ = [
    "CLOEXEC",
    "DIR_FLAGS",
    "NOFOLLOW",
    "OLD_PREFIX",
    "TMP_PREFIX",
    "RunDir",
    "link_refused",
]

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
# POSIX flags (getattr: this module still imports where they are missing, e.g. to read runs)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC


def link_refused(path: str) -> CorruptCheckpointError:
    """The error for a symbolic link met inside a run where highmark writes, naming it."""
    return CorruptCheckpointError(
        path,
        "is a symbolic link; highmark never writes through a link inside a run directory "
        "(the run directory itself may be one): remove the link",
    )


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _refuse_link(name: str, dir_fd: int, where: str) -> None:
    st = _lstat(name, dir_fd)
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise link_refused(where)


def _open_dir(name: str, dir_fd: int, where: str, create: bool) -> int:
    """The directory ``name`` under ``dir_fd``, opened without following a link (made if asked)."""
    try:
        return os.open(name, DIR_FLAGS | NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse_link(name, dir_fd, where)
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=dir_fd)
    return _open_dir(name, dir_fd, where, create=False)


def _fsync_tree(name: str, dir_fd: int, where: str) -> None:
    """Fsync every file and directory under ``name``; refuses a link anywhere in it."""
    fd = _open_dir(name, dir_fd, where, create=False)
    try:
        for entry in os.scandir(fd):
            inner = f"{where}/{entry.name}"
            if entry.is_symlink():
                raise link_refused(inner)
            if entry.is_dir(follow_symlinks=False):
                _fsync_tree(entry.name, fd, inner)
                continue
            file = os.open(entry.name, os.O_RDONLY | NOFOLLOW | CLOEXEC, dir_fd=fd)
            try:
                os.fsync(file)
            finally:
                os.close(file)
        os.fsync(fd)
    finally:
        os.close(fd)


class RunDir:
    """A run directory on local disk, written without following a link below its root.

    Paths are run-relative and already checked (:func:`~highmark.store.storage.check_relpath`).
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, rel: str) -> str:
        """The OS path of ``rel`` (for messages and reads)."""
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def _chain(self, parts: list[str], create: bool) -> int:
        """An fd of the directory ``parts`` name below the root, reached without following links.

        Raises:
            FileNotFoundError: a directory on the way is missing (and ``create`` is False).
            CorruptCheckpointError: a directory on the way is a symbolic link.
        """
        if create:
            os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for i, part in enumerate(parts):
                sub = _open_dir(part, fd, self.path("/".join(parts[: i + 1])), create)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def parent(self, rel: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """The directory holding ``rel``'s last part (an fd, closed on exit) and that part."""
        parts = rel.split("/")
        fd = self._chain(parts[:-1], create)
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def makedirs(self, rel: str) -> None:
        """Make the directory ``rel`` and those above it (a link on the way is refused)."""
        os.close(self._chain(rel.split("/") if rel else [], create=True))

    def create(self, rel: str) -> int:
        """A new, empty file at ``rel`` opened for writing (an fd).

        An existing file is unlinked first, so a hard link elsewhere keeps its bytes; a link at
        ``rel`` or above it is refused.
        """
        with self.parent(rel, create=True) as (fd, name):
            try:
                return os.open(name, _NEW, 0o666, dir_fd=fd)
            except FileExistsError:
                _refuse_link(name, fd, self.path(rel))
                os.unlink(name, dir_fd=fd)
            return os.open(name, _NEW, 0o666, dir_fd=fd)

    def open_in_place(self, rel: str, flags: int) -> int:
        """``rel`` opened in place with ``flags`` (created when missing): for the lock and the
        history. Refused when it is a link, not a regular file or has other hard links."""
        where = self.path(rel)
        mode = flags | os.O_CREAT | NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | CLOEXEC
        with self.parent(rel, create=True) as (dir_fd, name):
            try:
                fd = os.open(name, mode, 0o666, dir_fd=dir_fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.EMLINK):
                    _refuse_link(name, dir_fd, where)
                raise
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file: remove it"
        elif st.st_nlink > 1:
            problem = (
                f"has {st.st_nlink - 1} other hard link(s), which writing it in place would "
                "change too: replace it by a copy of its own"
            )
        if problem is not None:
            os.close(fd)
            raise CorruptCheckpointError(where, problem)
        os.set_blocking(fd, True)
        return fd

    def replace(self, rel: str, data: bytes) -> None:
        """Write a temporary sibling, fsync it, rename it over ``rel``, fsync the directory.

        A link at ``rel`` (or above it) is refused before anything is written.
        """
        where = self.path(rel)
        with self.parent(rel, create=True) as (fd, name):
            _refuse_link(name, fd, where)
            tmp = f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            try:
                with open(os.open(tmp, _NEW, 0o666, dir_fd=fd), "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                _refuse_link(name, fd, where)
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
            os.fsync(fd)

    def remove(self, rel: str) -> None:
        """Unlink ``rel`` (a link itself, never what it points to); nothing when it is missing."""
        try:
            with self.parent(rel) as (fd, name):
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass

    def remove_tree(self, rel: str) -> None:
        """Remove the directory ``rel`` and everything in it; a top-level one is first renamed
        to a hidden name, so it disappears at once. A link is removed itself, never followed."""
        try:
            with self.parent(rel) as (fd, name):
                st = _lstat(name, fd)
                if st is None:
                    return
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=fd)
                    if stat.S_ISLNK(st.st_mode):
                        log.warning("%s: removed the link, not what it points to", self.path(rel))
                    return
                if "/" not in rel and not rel.startswith("."):
                    trash = f"{TMP_PREFIX}del-{rel}-{uuid.uuid4().hex[:8]}"
                    os.rename(name, trash, src_dir_fd=fd, dst_dir_fd=fd)
                    os.fsync(fd)
                    name = trash
        except FileNotFoundError:
            return
        # rmtree removes a link it meets inside, never what it points to
        shutil.rmtree(os.path.join(os.path.dirname(self.path(rel)), name), ignore_errors=True)

    def commit(self, staging: str, final: str) -> None:
        """Fsync everything under ``staging``, rename it to ``final``, fsync the directory.

        An existing ``final`` is moved aside to ``.old-<final>-<id>`` first and removed after
        the rename. A link in ``staging`` (or ``staging`` being one) is refused.
        """
        old = None
        with self.parent(staging) as (src_fd, src):
            _refuse_link(src, src_fd, self.path(staging))
            _fsync_tree(src, src_fd, self.path(staging))
            with self.parent(final, create=True) as (dst_fd, dst):
                if _lstat(dst, dst_fd) is not None:
                    old = f"{OLD_PREFIX}{dst}-{uuid.uuid4().hex[:8]}"
                    os.rename(dst, old, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
                os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                os.fsync(dst_fd)
        if old is not None:
            self.remove_tree("/".join([*final.split("/")[:-1], old]))

    def recover(self) -> list[str]:
        """Clean leftovers of interrupted saves and deletes at the root; returns their names.

        A ``.old-<final>-<id>`` directory whose ``final`` is gone is renamed back (an interrupted
        replace); a link with a leftover's name is removed itself, never followed.
        """
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        removed = []
        for name in names:
            if not name.startswith((TMP_PREFIX, OLD_PREFIX)):
                continue
            path = self.path(name)
            st = os.lstat(path)
            final = name[len(OLD_PREFIX) :].rsplit("-", 1)[0]
            if name.startswith(OLD_PREFIX) and stat.S_ISDIR(st.st_mode) and _absent(self, final):
                os.rename(path, self.path(final))
                log.warning("%s: restored %s, replaced by a save that did not finish", path, final)
                continue
            if stat.S_ISLNK(st.st_mode):
                log.warning(
                    "%s: removed a link with a leftover's name, not what it points to", path
                )
            self.remove_tree(name)
            removed.append(name)
        if removed:
            fd = os.open(self.root, DIR_FLAGS)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return removed


def _absent(run: RunDir, name: str) -> bool:
    """Whether ``name`` is a plain name with nothing (not even a link) at it in the run."""
    plain = bool(name) and "/" not in name and name not in (".", "..")
    return plain and not os.path.lexists(run.path(name))
