"""The async writer: one background thread, one save in flight, errors re-raised later.

:class:`AsyncWriter` runs one job at a time on a daemon thread. Submitting while a job is in
flight waits for it (back-pressure: memory never grows with the number of pending saves). A job
that fails keeps its exception, which is re-raised (the original object, its traceback intact,
with a note saying which save failed) at the next :meth:`~AsyncWriter.submit`,
:meth:`~AsyncWriter.wait` or :meth:`~AsyncWriter.close`. Interpreter exit drains pending jobs.

:class:`HostSnapshot` copies the tensors of a flat tree into host buffers reused from save to
save, so the caller can keep training while the copy is written. :class:`BackgroundSaves` puts
the two together for a manager's async saves, with the copy taken at once or behind a fence.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from highmark.errors import StateChangedError, add_note
from highmark.state.leafcodecs import LeafCodec, codec_for_kind
from highmark.state.tree import FlatTree
from highmark.store.parallel import run_batches, thread_count

__all__ = ["AsyncWriter", "BackgroundSaves", "HostSnapshot"]

log = logging.getLogger(__name__)

_WRITERS: weakref.WeakSet[AsyncWriter] = weakref.WeakSet()


class AsyncWriter:
    """Runs save jobs on one background thread, at most one in flight.

    Args:
        name: The thread's name.

    Attributes:
        on_backpressure: Called (from the submitting thread) when :meth:`submit` or :meth:`wait`
            has to wait for a job in flight; for tests and instrumentation.
    """

    def __init__(self, name: str = "highmark-writer") -> None:
        self.name = name
        self.on_backpressure: Callable[[], object] | None = None
        self._cond = threading.Condition()
        self._job: tuple[Callable[[], object], str] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        _WRITERS.add(self)

    @property
    def busy(self) -> bool:
        """Whether a job is in flight."""
        with self._cond:
            return self._job is not None

    def submit(self, job: Callable[[], object], what: str) -> None:
        """Runs ``job`` in the background once the job in flight (if any) has finished.

        Args:
            job: The work; its exception is kept and re-raised later.
            what: What the job saves, for the note on a failure (e.g. "step 42 to /runs/a").

        Raises:
            BaseException: the failure of an earlier job, re-raised here.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: submit after close")
            self._drain_locked()
            self._job = (job, what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self) -> None:
        """Blocks until no job is in flight; re-raises a failed job's exception."""
        with self._cond:
            self._drain_locked()

    def close(self) -> None:
        """Drains the pending job and stops the thread; re-raises a failed job's exception."""
        with self._cond:
            if self._closed:
                self._raise_locked()
                return
            try:
                self._drain_locked()
            finally:
                self._closed = True
                self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _drain_locked(self) -> None:
        if self._job is not None:
            if self.on_backpressure is not None:
                self.on_backpressure()
            self._cond.wait_for(lambda: self._job is None)
        self._raise_locked()

    def _raise_locked(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closed)
                if self._job is None:
                    return
                job, what = self._job
            try:
                job()
            except BaseException as err:  # kept for the caller's thread
                add_note(err, f"highmark: background save of {what} failed in thread {self.name}")
                with self._cond:
                    self._error = err
            finally:
                with self._cond:
                    self._job = None
                    self._cond.notify_all()


def _reset_after_fork() -> None:
    """A forked child has no writer thread: forget the parent's in-flight job and thread."""
    for writer in list(_WRITERS):
        writer._cond = threading.Condition()
        writer._job = None
        writer._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_WRITERS):
        try:
            writer.close()
        except BaseException:
            log.exception("highmark: a background save failed at interpreter exit")


@dataclass
class _Buffer:
    """A tensor's host buffer and what it was allocated for."""

    kind: str
    key: Hashable  # the codec's layout key of the leaf it was allocated for
    leaf: Any
    nbytes: int


class HostSnapshot:
    """Copies a flat tree's tensors into host buffers that are reused from save to save.

    A buffer is keyed by key path and reallocated only when the leaf's kind, dtype or shape
    change. The copies go through the leaf codecs of :mod:`highmark.state.leafcodecs` (one batched
    copy per thread and kind: ``torch._foreach_copy_`` for torch, which releases the GIL for the
    whole batch), so this module never imports a framework. The tensors are split into
    byte-balanced groups copied on a few threads at once (:mod:`highmark.store.parallel`).

    The leaves must come from :func:`highmark.state.tree.flatten` (which checked that they are
    storable). :meth:`copy_later` defers the copy of every tensor that counts its in-place
    writes (torch's version counter): the caller gets the buffers at once and a function that
    fills them later and then checks that no source changed meanwhile.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, _Buffer] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held in host buffers."""
        return sum(b.nbytes for b in self._buffers.values())

    def copy(self, flat: FlatTree) -> FlatTree:
        """Returns a FlatTree with the same skeleton whose tensors are host copies."""
        out, copies = self._prepare(flat)
        _run(copies)
        return out

    def copy_later(self, flat: FlatTree, step: int) -> tuple[FlatTree, Callable[[], None]]:
        """Like :meth:`copy`, but returns before copying the tensors that count their writes.

        Tensors without a version counter (numpy arrays) are copied now. The returned function
        copies the rest (call it on any thread, once) and then raises
        :class:`~highmark.errors.StateChangedError` (for ``step``) naming every tensor whose
        version changed since this call: its copy may be torn.
        """
        out, copies = self._prepare(flat)
        versions = [c.codec.version(c.leaf) for c in copies]
        _run([c for c, v in zip(copies, versions, strict=True) if v is None])
        later = [(c, v) for c, v in zip(copies, versions, strict=True) if v is not None]

        def finish() -> None:
            _run([c for c, _ in later])
            changed = [c.name for c, v in later if c.codec.version(c.leaf) != v]
            if changed:
                raise StateChangedError(step, changed)

        return out, finish

    def _prepare(self, flat: FlatTree) -> tuple[FlatTree, list[_Copy]]:
        kinds = flat.tensor_kinds()
        out: dict[str, Any] = {}
        copies: list[_Copy] = []
        codecs: dict[str, LeafCodec] = {}
        for name, leaf in flat.tensors.items():
            kind = kinds[name]
            codec = codecs.get(kind)
            if codec is None:
                codec = codecs[kind] = codec_for_kind(kind)
            key = codec.layout_key(leaf)
            held = self._buffers.get(name)
            if held is None or held.kind != kind or held.key != key:
                dtype, shape = codec.describe(leaf, name)
                buf = codec.empty(dtype, shape)
                held = self._buffers[name] = _Buffer(kind, key, buf, int(buf.nbytes))
            out[name] = held.leaf
            copies.append(_Copy(name, leaf, codec, held.leaf, held.nbytes))
        if len(self._buffers) > len(flat.tensors):
            for name in set(self._buffers) - set(flat.tensors):
                del self._buffers[name]
        return FlatTree(tensors=out, skeleton=flat.skeleton, kinds=kinds), copies


@dataclass
class _Copy:
    """One tensor's copy into its host buffer."""

    name: str
    leaf: Any
    codec: LeafCodec
    buffer: Any  # the host leaf
    nbytes: int


def _run(copies: list[_Copy]) -> None:
    """Performs the copies on a few threads, in byte-balanced groups, batched by codec."""
    sizes = [c.nbytes for c in copies]
    run_batches(copies, sizes, _copy_batch, thread_count(sum(sizes)))


def _copy_batch(copies: list[_Copy]) -> None:
    by_codec: dict[str, list[_Copy]] = {}
    for c in copies:
        by_codec.setdefault(c.codec.kind, []).append(c)
    for group in by_codec.values():
        group[0].codec.copy_into([c.buffer for c in group], [c.leaf for c in group])


class BackgroundSaves:
    """A manager's async saves: a snapshot of the state into reused host buffers, then the write
    on an :class:`AsyncWriter` thread.

    Args:
        url: Where the saves go (for the thread's name and error notes).
        deferred: Take the copy of every tensor that counts its in-place writes on the writer
            thread too (:meth:`HostSnapshot.copy_later`); :meth:`fence` waits for it.
    """

    def __init__(self, url: str, deferred: bool) -> None:
        self.url = url
        self.deferred = deferred
        self._writer: AsyncWriter | None = None
        self._snapshot = HostSnapshot()
        self._taken = threading.Event()  # cleared while a deferred copy is pending
        self._taken.set()

    def submit(self, flat: FlatTree, step: int, write: Callable[[FlatTree], object]) -> None:
        """Snapshots ``flat`` and has ``write`` (called with the snapshot) run in the background.

        Waits for a save in flight first: it may still be reading the host buffers this save
        reuses (and memory never grows with pending saves). A failed earlier save is re-raised.
        """
        if self._writer is None:
            self._writer = AsyncWriter(f"highmark-writer {self.url}")
        self._writer.wait()
        if self.deferred:
            host, copy_rest = self._snapshot.copy_later(flat, step)
            self._taken.clear()

            def job() -> None:
                try:
                    copy_rest()  # raises StateChangedError before anything is written
                finally:
                    self._taken.set()
                write(host)

        else:
            host = self._snapshot.copy(flat)

            def job() -> None:
                write(host)

        try:
            self._writer.submit(job, what=f"step {step} to {self.url}")
        except BaseException:
            self._taken.set()  # nothing is pending: never leave a fence closed
            raise

    def fence(self) -> None:
        """Blocks until the pending save's host copy is taken (immediate unless deferred)."""
        self._taken.wait()

    def wait(self) -> None:
        """Blocks until the pending save is done; re-raises a failed one."""
        if self._writer is not None:
            self._writer.wait()

    def close(self) -> None:
        """Waits for the pending save (re-raising a failure) and stops the thread."""
        if self._writer is not None:
            self._writer.close()
