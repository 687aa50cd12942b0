"""Spreading byte-heavy work (reads, host copies) over a few threads, in byte-balanced groups.

Work items (one per tensor) are split, in order, into contiguous groups of about equal bytes,
one group per thread; the caller's thread takes the first. The work must release the GIL for
the bulk of its time (``os.preadv``, xxhash on large buffers, ``numpy.copyto``), so the threads
run in parallel. All items are known before any thread starts: a worker that needed the GIL
between two pieces while the caller still prepared items would wait for the interpreter's
switch interval.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["MAX_THREADS", "run_batches", "run_in_groups", "thread_count"]

T = TypeVar("T")

#: At most this many threads work at once.
MAX_THREADS = 4
#: A thread is only worth it for at least this many bytes.
BYTES_PER_THREAD = 8 << 20


def thread_count(nbytes: int) -> int:
    """How many threads should share work on ``nbytes``: the CPUs this process may use, at
    most :data:`MAX_THREADS`, and one per :data:`BYTES_PER_THREAD`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus, nbytes // BYTES_PER_THREAD))


def _groups(sizes: Sequence[int], count: int) -> list[list[int]]:
    """``count`` contiguous runs of the indices of ``sizes``, of about equal total size (an
    item goes to the group its middle byte falls in)."""
    total = max(sum(sizes), 1)
    groups: list[list[int]] = [[] for _ in range(count)]
    done = 0
    for index, size in enumerate(sizes):
        groups[min(count - 1, (2 * done + size) * count // (2 * total))].append(index)
        done += size
    return groups


def run_in_groups(
    items: Sequence[T], sizes: Sequence[int], work: Callable[[T], object], threads: int
) -> None:
    """Calls ``work(item)`` for every item, on ``threads`` threads (the caller's included).

    A thread whose item fails stops its group; the others finish theirs.

    Raises:
        BaseException: the error of the first failed item, in the order of ``items``.
    """

    def each(group: list[T]) -> None:
        for item in group:
            work(item)

    run_batches(items, sizes, each, threads)


def run_batches(
    items: Sequence[T], sizes: Sequence[int], work: Callable[[list[T]], object], threads: int
) -> None:
    """Calls ``work(group)`` once per group of items, each group on its own thread (the
    caller's takes the first); groups are contiguous runs of ``items`` of about equal bytes.

    Raises:
        BaseException: the error of the first failed group, in the order of ``items``.
    """
    groups = [[items[i] for i in g] for g in _groups(sizes, max(1, threads)) if g]
    if not groups:
        return
    errors: list[tuple[int, BaseException]] = []

    def run(index: int) -> None:
        try:
            work(groups[index])
        except BaseException as err:  # raised by the caller's thread, in item order
            errors.append((index, err))

    helpers = [
        threading.Thread(target=run, args=(i,), name=f"highmark-worker-{i}", daemon=True)
        for i in range(1, len(groups))
    ]
    for helper in helpers:
        helper.start()
    try:
        run(0)
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
