"""Reading many tensors' bytes at once: positional reads on a few threads, checked as they land.

:func:`read_all` takes the reads a restore has planned (:class:`ReadJob`: a file, an offset, the
memory to fill, the expected xxh3-64) and splits them, in file order, into contiguous groups of
about equal bytes, one per thread (the caller's thread takes the first). Each thread reads its
tensors in 1 MiB pieces and hashes each piece right after reading it, while it is still in the
core's cache. Reads and hashes release the GIL, so the threads run in parallel: on this
project's 2-core machine a verified read of a 1 GB state into live tensors took 0.095 s, against
0.117 s for one thread reading the same bytes unverified (``readinto``) and 0.19 s for reading,
then hashing, each tensor.

The reads start only once all are planned. Starting them while the caller still plans (Python
work that holds the GIL) was tried and was slower: a reader waiting for the GIL between two
pieces waits for the interpreter's switch interval (5 ms).

Local files are read with ``os.preadv`` (positional, so the threads share one descriptor).
Anything else (an fsspec file) is read by the caller's thread alone, with seek + readinto.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import xxhash

from highmark.errors import CorruptCheckpointError

__all__ = ["CHUNK_BYTES", "MAX_THREADS", "ReadJob", "read_all"]

#: The piece a tensor is read and hashed in: small enough to be hashed from the core's cache.
CHUNK_BYTES = 1 << 20
#: At most this many threads read at once (two already saturate this project's machines).
MAX_THREADS = 4
#: A thread is only worth it for at least this many bytes.
_BYTES_PER_THREAD = 8 << 20


@dataclass
class ReadJob:
    """One tensor's bytes: read ``len(view)`` bytes at ``offset`` of ``file`` into ``view``."""

    file: BinaryIO
    rel: str  #: the file's run-relative path, for errors
    offset: int
    view: memoryview
    name: str  #: the tensor's key path, for errors
    xxh3: str | None  #: expected xxh3-64 (hex), or None not to verify


def _positional(file: BinaryIO) -> bool:
    return isinstance(file, io.FileIO) and hasattr(os, "preadv")


def _fill(job: ReadJob) -> None:
    """Reads the job's bytes (hashing them as they arrive) and checks them."""
    hasher = xxhash.xxh3_64() if job.xxh3 is not None else None
    view, pos, size = job.view, 0, len(job.view)
    positional = _positional(job.file)
    fd = job.file.fileno() if positional else -1
    if not positional:
        job.file.seek(job.offset)
    while pos < size:
        chunk = view[pos : pos + CHUNK_BYTES]
        if positional:
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


def _thread_count(jobs: Sequence[ReadJob], total: int) -> int:
    if not all(_positional(job.file) for job in jobs):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus, total // _BYTES_PER_THREAD))


def _groups(jobs: Sequence[ReadJob], count: int, total: int) -> list[list[tuple[int, ReadJob]]]:
    """``count`` contiguous runs of ``jobs`` (with their indices) of about equal bytes."""
    groups: list[list[tuple[int, ReadJob]]] = [[] for _ in range(count)]
    done = 0
    for index, job in enumerate(jobs):
        groups[min(count - 1, done * count // max(total, 1))].append((index, job))
        done += len(job.view)
    return groups


def read_all(jobs: Sequence[ReadJob]) -> None:
    """Performs every read, in parallel where the files allow; each tensor is hashed as read.

    Raises:
        CorruptCheckpointError: for the first job (in order) whose file is truncated or whose
            bytes do not match their checksum. Other jobs' memory may already be filled.
        OSError: when a read fails.
    """
    total = sum(len(job.view) for job in jobs)
    groups = _groups(jobs, _thread_count(jobs, total), total)
    errors: list[tuple[int, BaseException]] = []

    def run(group: list[tuple[int, ReadJob]]) -> None:
        for index, job in group:
            try:
                _fill(job)
            except BaseException as err:  # raised by the caller's thread, in job order
                errors.append((index, err))
                return

    helpers = [
        threading.Thread(target=run, args=(group,), name=f"highmark-read-{i}", daemon=True)
        for i, group in enumerate(groups[1:], 1)
        if group
    ]
    for helper in helpers:
        helper.start()
    try:
        run(groups[0])
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
