"""A local file writer that keeps the disk busy while the caller is still writing.

A plain ``write`` + ``fsync`` runs in two phases: every byte is first copied into the page cache,
and only the ``fsync`` starts the disk. :class:`StreamingFile` asks the kernel to start writing
each completed stretch of the file at once (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``,
which does not wait), so the copying, the hashing of the next tensor and the disk overlap, and
the final ``fsync`` only waits for the tail (docs/benchmarks.md has the measurements). It
changes nothing about durability: the caller still fsyncs before it commits.
Elsewhere (no ``sync_file_range``, or a filesystem that refuses it) it is a plain unbuffered
file.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["WRITEBACK_BYTES", "StreamingFile"]

log = logging.getLogger(__name__)

#: How much is written before the kernel is asked to start writing it out.
WRITEBACK_BYTES = 2 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages in range, don't wait


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (ctypes releases the GIL around it), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Any = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()


class StreamingFile(io.FileIO):
    """A new file opened for writing (unbuffered) that starts writeback behind the writer.

    ``opener`` opens it instead of ``open(path, "wb")`` (as for :class:`io.FileIO`).

    ``write`` always writes all of ``data`` (looping over short writes) and returns its length.
    """

    def __init__(
        self, path: str | os.PathLike[str], opener: Callable[[str, int], int] | None = None
    ) -> None:
        super().__init__(path, "wb", opener=opener)
        self._written = 0
        self._started = 0  # bytes whose writeback has been started
        self._writeback = _SYNC_FILE_RANGE

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        total = len(view)
        while len(view):
            n = super().write(view[:WRITEBACK_BYTES]) or 0
            view = view[n:]
            self._written += n
            if self._written - self._started >= WRITEBACK_BYTES:
                self._start_writeback()
        return total

    def _start_writeback(self) -> None:
        if self._writeback is None:
            self._started = self._written
            return
        length = self._written - self._started
        if self._writeback(self.fileno(), self._started, length, _SYNC_FILE_RANGE_WRITE) != 0:
            reason = os.strerror(ctypes.get_errno())
            log.debug("%s: sync_file_range refused (%s); writing plainly", self.name, reason)
            self._writeback = None
        self._started = self._written
