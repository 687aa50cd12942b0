"""Reading many tensors' bytes at once: positional reads on a few threads, checked as they land.

:func:`read_all` takes the reads a restore has planned (:class:`ReadJob`: a file, an offset, the
memory to fill, the expected xxh3-64) and splits them, in file order, into contiguous groups of
about equal bytes, one per thread (the caller's thread takes the first). Each thread reads its
tensors in 1 MiB pieces and hashes each piece right after reading it, while it is still in the
core's cache. Reads and hashes release the GIL, so the threads run in parallel. A
``check_only`` job is read into the thread's scratch buffer instead of its destination and only
checked: a restore into live tensors checks every byte that way before it copies any.

The threads are :mod:`highmark.store.parallel`'s; the reads start once all are planned.

Local files are read with ``os.preadv`` (positional, so the threads share one descriptor). Small
tensors (64 KiB or less) that lie next to each other, as a save lays them out, are read with one
``preadv`` into all their buffers and then hashed one by one. Anything else (an fsspec file) is
read by the caller's thread alone, with seek + readinto. Measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

import xxhash

from highmark.errors import CorruptCheckpointError
from highmark.store.layout import SMALL_TENSOR
from highmark.store.parallel import run_batches, thread_count

__all__ = ["CHUNK_BYTES", "ReadJob", "positional", "read_all"]

T = TypeVar("T")

#: The piece a tensor is read and hashed in: small enough to be hashed from the core's cache.
CHUNK_BYTES = 1 << 20
#: At most this many small tensors (:data:`~highmark.store.layout.SMALL_TENSOR`) are read with
#: one call, and at most :data:`CHUNK_BYTES` (``IOV_MAX`` is 1024 on Linux).
JOIN_COUNT = 512


@dataclass
class ReadJob:
    """One tensor's bytes: read ``len(view)`` bytes at ``offset`` of ``file`` into ``view``.

    A ``check_only`` job reads the bytes into a small scratch buffer and checks them against
    ``xxh3``, leaving ``view`` untouched (only its length counts): how a restore verifies what
    it will write into live tensors before writing any of it.
    """

    file: BinaryIO
    rel: str  #: the file's run-relative path, for errors
    offset: int
    view: memoryview
    name: str  #: the tensor's key path, for errors
    xxh3: str | None  #: expected xxh3-64 (hex), or None not to verify
    check_only: bool = False


def positional(file: BinaryIO) -> bool:
    """Whether ``file`` is read with ``os.preadv`` (a local file), by several threads at once."""
    return isinstance(file, io.FileIO) and hasattr(os, "preadv")


class _Scratch:
    """The memory one thread reads ``check_only`` bytes into: :data:`CHUNK_BYTES`, made on
    first use and handed out front to back by :meth:`take` (cleared per job or joined run)."""

    def __init__(self) -> None:
        self._buffer: memoryview | None = None
        self._used = 0

    def clear(self) -> None:
        self._used = 0

    def take(self, size: int) -> memoryview:
        """The next ``size`` bytes (at most :data:`CHUNK_BYTES` since the last clear)."""
        if self._buffer is None:
            self._buffer = memoryview(bytearray(CHUNK_BYTES))
        view = self._buffer[self._used : self._used + size]
        self._used += size
        return view


def _fill(job: ReadJob, scratch: _Scratch) -> None:
    """Reads the job's bytes (hashing them as they arrive) and checks them."""
    hasher = xxhash.xxh3_64() if job.xxh3 is not None else None
    view, pos, size = job.view, 0, len(job.view)
    is_positional = positional(job.file)
    fd = job.file.fileno() if is_positional else -1
    if not is_positional:
        job.file.seek(job.offset)
    while pos < size:
        if job.check_only:
            scratch.clear()
            chunk = scratch.take(min(CHUNK_BYTES, size - pos))
        else:
            chunk = view[pos : pos + CHUNK_BYTES]
        if is_positional:
            n = os.preadv(fd, [chunk], job.offset + pos)
        else:
            n = cast(Any, job.file).readinto(chunk)
        if not n:
            raise CorruptCheckpointError(job.rel, "file is truncated")
        if hasher is not None:
            hasher.update(chunk[:n])
        pos += n
    if hasher is not None and hasher.hexdigest() != job.xxh3:
        raise CorruptCheckpointError(job.rel, f"checksum mismatch in tensor {job.name!r}")


def _fill_joined(jobs: list[ReadJob], scratch: _Scratch) -> None:
    """Reads jobs whose bytes follow each other in one file with one ``preadv``, then checks
    each; a single job is read by :func:`_fill`."""
    if len(jobs) == 1:
        _fill(jobs[0], scratch)
        return
    first = jobs[0]
    scratch.clear()  # a joined run is at most CHUNK_BYTES: its check_only jobs fit
    views = [scratch.take(len(job.view)) if job.check_only else job.view for job in jobs]
    if os.preadv(first.file.fileno(), views, first.offset) != sum(len(v) for v in views):
        for job in jobs:  # a short read: each job on its own says which file is truncated
            _fill(job, scratch)
        return
    for job, view in zip(jobs, views, strict=True):
        if job.xxh3 is not None and xxhash.xxh3_64_hexdigest(view) != job.xxh3:
            raise CorruptCheckpointError(job.rel, f"checksum mismatch in tensor {job.name!r}")


def _joined(jobs: Sequence[ReadJob]) -> list[list[ReadJob]]:
    """The jobs in order, runs of small ones joined: each small job's bytes right after the
    previous one's in the same file, at most :data:`CHUNK_BYTES` and :data:`JOIN_COUNT` a run."""
    out: list[list[ReadJob]] = []
    run: list[ReadJob] = []
    run_bytes = 0
    for job in jobs:
        size = len(job.view)
        if size > SMALL_TENSOR:  # a large job stays alone
            if run:
                out.append(run)
                run, run_bytes = [], 0
            out.append([job])
            continue
        if run and (
            job.file is not run[-1].file
            or job.offset != run[-1].offset + len(run[-1].view)
            or run_bytes + size > CHUNK_BYTES
            or len(run) >= JOIN_COUNT
        ):
            out.append(run)
            run, run_bytes = [], 0
        run.append(job)
        run_bytes += size
    if run:
        out.append(run)
    return out


def read_all(jobs: Sequence[ReadJob]) -> None:
    """Performs every read, in parallel where the files allow; each tensor is hashed as read.

    On local files, small tensors that lie next to each other (a save writes them together) are
    read with one system call (at most :data:`JOIN_COUNT` of them). Each thread reads
    ``check_only`` jobs into one scratch buffer of :data:`CHUNK_BYTES`, so checking adds no
    memory that grows with the state.

    Raises:
        CorruptCheckpointError: for the first job (in order) whose file is truncated or whose
            bytes do not match their checksum. Other jobs' memory may already be filled.
        OSError: when a read fails.
    """
    if not all(positional(job.file) for job in jobs):
        run_batches(jobs, [len(job.view) for job in jobs], _each(_fill), 1)
        return
    batches = _joined(jobs)
    sizes = [sum(len(job.view) for job in batch) for batch in batches]
    run_batches(batches, sizes, _each(_fill_joined), thread_count(sum(sizes)))


def _each(fill: Callable[[T, _Scratch], None]) -> Callable[[list[T]], None]:
    """Work for one thread's group: ``fill`` each item with the thread's own scratch."""

    def group(items: list[T]) -> None:
        scratch = _Scratch()
        for item in items:
            fill(item, scratch)

    return group
