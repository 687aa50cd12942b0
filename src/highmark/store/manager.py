"""CheckpointManager: save, rank, keep, restore and verify the checkpoints of one run.

A save goes: flatten -> estimate the size -> free-space check (before touching anything) ->
(async: copy to reused host buffers on the caller's thread, the rest in the writer thread) ->
write into a staging dir -> commit -> retention decision -> one atomic index write (the new entry
and the decision) -> delete. A crash at any point leaves a consistent store: the directory is the
source of truth, and the next open cleans leftovers and reconciles the index with it.

Saving a step that already exists is refused with :class:`~highmark.errors.ConfigError` unless
``force=True``; then it is replaced atomically on local disk (rename over it; an interrupted
replace is rolled back at the next open) and, on object stores, which have no rename, the old one
is deleted before the new one is written.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from highmark.errors import ConfigError, InsufficientSpaceError, add_note
from highmark.policy.monitor import Monitor
from highmark.policy.retention import Retention, RetentionDecision, retention_from_flags
from highmark.state.tree import FlatTree, flatten
from highmark.store import format as fmt
from highmark.store import rebuild
from highmark.store.fallback import Request, candidates, restore_newest
from highmark.store.identity import ensure_run_id
from highmark.store.index import (
    CheckpointInfo,
    Entry,
    clean_metadata,
    clean_metrics,
    records,
    step_dir,
    would_be_best,
)
from highmark.store.local import open_storage
from highmark.store.manifests import ManifestCache
from highmark.store.storage import Storage, StorageLock
from highmark.store.verification import VerifyReport, verify_steps
from highmark.store.writer import BackgroundSaves

__all__ = ["CheckpointManager"]

log = logging.getLogger(__name__)

Which = str | int
_SPACE_MARGIN = 1 << 20


class CheckpointManager:
    """Saves, ranks, keeps and restores the checkpoints of one run (local path or fsspec URL).

    Args:
        directory: The run directory: a local path or an fsspec URL such as ``s3://bucket/run``.
        monitor: The metric that ranks checkpoints: its name or a
            :class:`~highmark.policy.monitor.Monitor` (pass the stopper's so both agree).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (read from the name) when ``monitor`` is a name.
        keep_best: Keep the k best checkpoints by ``monitor``.
        keep_last: Keep the n latest checkpoints.
        keep_every: Keep every checkpoint whose step is a multiple of this, for good.
        max_bytes: A byte budget for the kept checkpoints (best and latest are always kept).
        async_save: ``True``: write in a background thread; ``save`` blocks only for a copy into
            reused host buffers. ``"deferred"``: the copy of every tensor that counts its
            in-place writes (torch) runs in the background too, so ``save`` blocks only for
            bookkeeping; the caller must call :meth:`fence` before changing the saved state (a
            :class:`~highmark.Run` installs hooks that do it before each optimizer step and
            before the forward pass of a model with buffers). A tensor changed before the copy
            of it ends is detected by its version counter and that save is dropped with
            :class:`~highmark.errors.StateChangedError` (writes through ``.data`` or a numpy
            view are not counted: fence before them).
        storage_options: Passed to fsspec for URLs.
        retention: A :class:`~highmark.policy.retention.Retention` replacing the keep_* flags.
        read_only: Open without the writer lock and without cleaning or saving.

    Ties in the monitored metric rank the older checkpoint first; a checkpoint saved without
    the monitored metric (or with NaN) is never the best. The best, the latest and protected
    steps are never deleted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | Storage,
        monitor: str | Monitor | None = None,
        mode: str = "auto",
        keep_best: int | None = 1,
        keep_last: int | None = 1,
        keep_every: int | None = None,
        max_bytes: int | None = None,
        async_save: bool | str = False,
        storage_options: dict[str, Any] | None = None,
        retention: Retention | None = None,
        read_only: bool = False,
    ) -> None:
        if async_save not in (False, True, "deferred"):
            raise ConfigError(f'async_save must be True, False or "deferred", got {async_save!r}')
        self.storage = open_storage(directory, storage_options)
        self.directory = self.storage.url
        self.monitor = Monitor(monitor, mode=mode) if isinstance(monitor, str) else monitor
        if self.monitor is None:
            # Reopening a run without naming the monitor keeps the recorded ranking.
            self.monitor = rebuild.recorded_monitor(self.storage)
        self.retention = retention or retention_from_flags(
            self.monitor, keep_best, keep_last, keep_every, max_bytes
        )
        self.read_only = read_only
        self.async_save = bool(async_save)
        self.deferred = async_save == "deferred"
        self._protected: dict[int, str] = {}
        self._background: BackgroundSaves | None = None
        if self.async_save:
            self._background = BackgroundSaves(self.url, deferred=self.deferred)
        self._manifests = ManifestCache(self.storage)
        self._lock: StorageLock | None = None
        self._closed = False
        self._mu = threading.RLock()  # the writer thread updates the index state
        if not read_only:
            # read-only media: ReadOnlyError; a full disk: an OSError saying nothing changed
            self._lock = rebuild.lock_run(self.storage)
        try:
            self._state = rebuild.open_index(self.storage, self.monitor, read_only)
            ensure_run_id(self.storage, self._state, self._manifests, read_only)
        except BaseException:
            self._release_lock()
            raise

    @property
    def url(self) -> str:
        """The run directory as given (path or URL); the same as ``directory``."""
        return self.directory

    def _write_index(self, situation: str) -> None:
        rebuild.write_index(self.storage, self._state, situation)  # an OSError notes what is safe

    def save(
        self,
        step: int,
        state: Any,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> CheckpointInfo:
        """Saves ``state`` as checkpoint ``step``; returns its info (async: as it will be).

        Raises:
            ConfigError: read-only, closed, a bad step, or ``step`` exists and ``force`` is False.
            InsufficientSpaceError: the storage cannot hold the checkpoint (nothing was written).
            UnsupportedStateError: a leaf of ``state`` cannot be stored; names its key path.
        """
        self._check_writable("save")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ConfigError(f"step must be an int >= 0, got {step!r}")
        metrics_, metadata_ = clean_metrics(metrics), clean_metadata(metadata)
        self.wait()  # back-pressure, and a failed earlier save surfaces here
        if step in self._state.entries and not force:
            raise ConfigError(
                f"{self.url}: step {step} is already saved ({step_dir(step)}); "
                "pass force=True to replace it"
            )
        flat = flatten(state)
        estimate = fmt.estimate_size(flat)
        free = self.storage.free_bytes()
        if free is not None and estimate + _SPACE_MARGIN > free:
            raise InsufficientSpaceError(
                errno.ENOSPC,
                f"checkpoint step {step} needs about {estimate} bytes, only {free} free",
                self.url,
            )
        created = time.time()
        if self._background is None:
            return self._write(step, flat, metrics_, metadata_, created)
        self._background.submit(
            flat, step, lambda host: self._write(step, host, metrics_, metadata_, created)
        )
        entry = Entry(step, metrics_, metadata_, estimate, created)
        with self._mu:  # the writer thread may be recording the commit right now
            return self._info(entry, best_step=would_be_best(self._state, entry, self.monitor))

    def _write(
        self, step: int, flat: FlatTree, metrics: dict[str, float], metadata: dict[str, Any],
        created: float,
    ) -> CheckpointInfo:  # fmt: skip
        final = step_dir(step)
        if not self.storage.is_local and self.storage.exists(final):
            self._forget(step)
            self.storage.remove_tree(final)
        staging = self.storage.staging_dir(final)
        stage = "writing the files"
        try:
            info: dict[str, Any] = {"metrics": metrics, "metadata": metadata, "created": created}
            manifest = fmt.write_checkpoint(
                self.storage, staging, flat, step=step, run=self._state.run_id, **info
            )
            stage = "committing"
            self.storage.commit_dir(staging, final)
        except BaseException as err:
            add_note(err, f"highmark: saving step {step} to {self.url} failed while {stage}")
            try:
                self.storage.remove_tree(staging)
            except Exception as cleanup:  # keep the original error; the next open cleans up
                log.warning("%s: could not remove %s: %s", self.url, staging, cleanup)
            raise
        with self._mu:
            return self._record_commit(step, final, manifest, metrics, metadata, created)

    def _record_commit(
        self, step: int, final: str, manifest: dict[str, Any], metrics: dict[str, float],
        metadata: dict[str, Any], created: float,
    ) -> CheckpointInfo:  # fmt: skip
        entry = rebuild.entry_from_manifest(self.storage, final, manifest)
        self._manifests.put(final, manifest)
        entry.metrics, entry.metadata, entry.created = metrics, metadata, created
        self._state.add(entry, self.monitor)
        # One index write covers the new entry and the retention decision, before any delete.
        self._apply(
            self.retention.decide(records(self._state), self._state.protected(self._protected)),
            step,
        )
        if self._lock is not None:
            self._lock.refresh()
        # A replaced older step may be deleted by this very decision: describe what was written.
        return self._info(self._state.entries.get(step, entry))

    def _forget(self, step: int) -> None:
        """Drops ``step`` from the index before its files go (object stores replace that way)."""
        with self._mu:
            if self._state.drop(step, self.monitor):
                self._write_index(f"before replacing step {step}")

    def _apply(self, decision: RetentionDecision, trigger: int | None) -> None:
        """Records the decision in the index, writes it, and only then deletes."""
        for note in self._state.record_decision(decision, trigger):
            log.warning("%s: %s", self.url, note)
        when = "while pruning" if trigger is None else f"after step {trigger} was committed"
        self._write_index(when)
        for step in decision.delete:
            try:
                self.storage.remove_tree(step_dir(step))
            except OSError as err:  # the index no longer lists it; the next open cleans it
                log.warning("%s: could not delete %s: %s", self.url, step_dir(step), err)

    def fence(self) -> None:
        """Blocks until the pending save no longer reads the live state (its host copy is
        taken); then the state may change. Immediate unless ``async_save="deferred"``."""
        if self._background is not None:
            self._background.fence()

    def wait(self) -> None:
        """Blocks until every pending save is durable; re-raises a failed one."""
        if self._background is not None:
            self._background.wait()

    def _info(self, entry: Entry, best_step: int | None = -1) -> CheckpointInfo:
        best = self._state.best_step if best_step == -1 else best_step
        latest = max([*self._state.entries, entry.step])
        return CheckpointInfo(
            step=entry.step, metrics=dict(entry.metrics), metadata=dict(entry.metadata),
            size=entry.size, created=entry.created, path=self._path(entry.step),
            is_best=entry.step == best, is_latest=entry.step == latest, kept_by=entry.kept_by,
        )  # fmt: skip

    def _path(self, step: int) -> str:
        return f"{self.url.rstrip('/')}/{step_dir(step)}"

    def _resolve(self, which: Which) -> int:
        with self._mu:
            return self._state.resolve(which, self.url)

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every committed checkpoint, oldest step first."""
        with self._mu:
            return [self._info(e) for e in records(self._state)]

    def info(self, which: Which) -> CheckpointInfo:
        """The info of ``"latest"``, ``"best"`` or a step; CheckpointNotFoundError when absent."""
        with self._mu:
            return self._info(self._state.entries[self._resolve(which)])

    @property
    def best(self) -> CheckpointInfo | None:
        """The best checkpoint by the monitor (None without a monitor or a ranked checkpoint)."""
        with self._mu:
            step = self._state.best_step
            return None if step is None else self._info(self._state.entries[step])

    @property
    def latest(self) -> CheckpointInfo | None:
        """The checkpoint with the highest step, or None."""
        with self._mu:
            entries = self._state.entries
            return self._info(entries[max(entries)]) if entries else None

    def manifest(self, which: Which) -> dict[str, Any]:
        """The validated manifest of a checkpoint."""
        return dict(fmt.read_manifest(self.storage, step_dir(self._resolve(which))))

    def protect(self, step: int, reason: str) -> None:
        """Never deletes ``step`` while this manager lives (e.g. the step a run resumed from)."""
        with self._mu:
            self._protected[int(step)] = reason

    def restore(
        self,
        which: Which = "latest",
        keys: Sequence[str] | None = None,
        into: Any = None,
        fallback: bool = False,
        *,
        zero_copy: bool = False,
    ) -> Any:
        """Loads a checkpoint's state tree (``keys``: only those parts; ``into``: fill in place).

        Nothing reaches ``into`` before every byte is verified; other tensors own their memory
        (``zero_copy=True``: views of the mapped files; a file edited in place shows through,
        one truncated kills the process with SIGBUS). A copy from another step or run is
        refused. ``fallback=True`` skips a checkpoint that cannot be restored, for any reason
        (logged), for the newest one that can (:mod:`highmark.store.fallback`).

        Raises:
            CheckpointNotFoundError: no such checkpoint. ConfigError: ``keys``/``into`` misfit.
            CheckpointError, OSError: why it cannot be restored (naming the file or directory).
        """
        self.wait()
        with self._mu:
            steps = candidates(self._state, which, self.url, fallback)
        request, run_id = Request(keys, into, zero_copy), self._state.run_id
        return restore_newest(self.storage, self._manifests, steps, request, run_id, self._path)

    def verify(self, which: Which | None = None) -> VerifyReport:
        """Checks every file of every (or one) checkpoint against its recorded checksum, and
        that no other file is in it; one the writer deletes meanwhile is removed, not damaged."""
        with self._mu:  # a background save may be changing the entries
            steps = sorted(self._state.entries) if which is None else [self._resolve(which)]
        listed = None if self.read_only else self._state.entries.__contains__
        return verify_steps(self.storage, steps, self._path, listed)

    def prune(self, retention: Retention, dry_run: bool = False) -> RetentionDecision:
        """Applies ``retention`` now (best, latest and protected steps are always kept)."""
        if not dry_run:
            self._check_writable("prune")
            self.wait()
        decision = retention.decide(records(self._state), self._state.protected(self._protected))
        if not dry_run:
            self._apply(decision, None)
        return decision

    def _check_writable(self, what: str) -> None:
        if self._closed:
            raise ConfigError(f"{self.url}: {what} on a closed CheckpointManager")
        if self.read_only:
            raise ConfigError(f"{self.url}: {what} on a read-only CheckpointManager")

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        """Waits for pending saves (re-raising a failure) and releases the writer lock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._background is not None:
                self._background.close()
        finally:
            self._release_lock()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except BaseException as err:
            if exc is None:
                raise
            # Do not mask the exception already propagating.
            log.error("%s: a pending save failed while closing: %r", self.url, err)

    def __repr__(self) -> str:
        n = len(self._state.entries)
        return f"CheckpointManager({self.url!r}, {n} checkpoints, monitor={self.monitor!r})"
