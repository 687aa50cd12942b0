"""Opening a run's index: checked, reconciled with the directory, or rebuilt from the manifests.

The directory is the source of truth and ``highmark.json`` a checked cache of it
(:mod:`highmark.store.index`). At open, :func:`open_index`:

- cleans leftovers of interrupted saves and uncommitted checkpoint dirs (not when read-only);
- uses an index whose checksum verifies: re-adds the committed checkpoints it misses (a crash
  between commit and index write) from their manifests, drops the entries whose dir is gone;
- rebuilds every entry from its checkpoint's verified manifest when the index is absent, damaged
  (checksum mismatch, unparseable, over a limit, malformed) or has no checksum (written before
  indexes had one), and logs why. A damaged index's monitor and retention log are dropped as
  well, so nothing unverified is ranked on: the ranking then uses the monitor the caller gives
  (a Run gives its stopper's). An index without a checksum keeps its monitor and retention log;
- re-ranks (:func:`~highmark.policy.retention.best_record`) when entries were re-added or rebuilt,
  the best's dir is gone, or the monitor changed.

A writable open writes the index back when it changed; a read-only open keeps the result in memory.
A checkpoint whose manifest fails its checks is left out, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from typing import Any

from highmark.__about__ import __version__
from highmark.errors import CorruptCheckpointError, ReadOnlyError, add_note
from highmark.policy.monitor import Monitor
from highmark.policy.retention import best_record
from highmark.store import format as fmt
from highmark.store.index import (
    INDEX,
    Entry,
    IndexState,
    parse_step_dir,
    read_index,
    records,
    step_dir,
)
from highmark.store.storage import Storage, StorageLock

__all__ = ["entry_from_manifest", "lock_run", "open_index", "recorded_monitor", "write_index"]

log = logging.getLogger(__name__)


def entry_from_manifest(storage: Storage, name: str, manifest: dict[str, Any]) -> Entry:
    """An index entry made from a committed checkpoint's (validated) manifest."""
    step = parse_step_dir(name)
    assert step is not None
    size = sum(int(f.get("size", 0)) for f in manifest.get("files", []))
    with contextlib.suppress(OSError):
        size += storage.size(f"{name}/{fmt.MANIFEST}")
    created = manifest.get("created")
    return Entry(
        step=step,
        metrics={str(k): _number(v) for k, v in dict(manifest.get("metrics") or {}).items()},
        metadata=dict(manifest.get("metadata") or {}),
        size=size,
        created=_number(created) if isinstance(created, (int, float)) else 0.0,
        manifest=str(manifest.get("checksum", "")),
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def recorded_monitor(storage: Storage) -> Monitor | None:
    """The monitor an existing run was ranked by; None for a new or unranked run, or when its
    index is damaged (a damaged index's monitor is not trusted)."""
    loaded, _ = read_index(storage)
    if loaded is None or loaded.monitor is None:
        return None
    return Monitor.from_config(loaded.monitor)


def lock_run(storage: Storage) -> StorageLock:
    """Creates the run directory if needed and takes the writer lock.

    Raises:
        LockedError: another live writer holds the run.
        OSError: with a note saying what was being done (e.g. the disk is full).
    """
    stage = "creating the run directory"
    try:
        storage.makedirs("")
        stage = "taking the writer lock"
        owner = f"highmark CheckpointManager pid {os.getpid()} on {socket.gethostname()}"
        return storage.lock(owner)
    except OSError as err:
        if err.errno in ReadOnlyError.ERRNOS:  # EROFS, EACCES: say how to read it instead
            raise ReadOnlyError(storage.url, err) from err
        add_note(
            err,
            f"highmark: opening {storage.url} for writing failed while {stage}; nothing in the "
            "run was changed (its checkpoints and index are intact)",
        )
        raise


def write_index(storage: Storage, state: IndexState, situation: str) -> None:
    """Replaces ``highmark.json`` atomically with ``state``.

    Raises:
        OSError: with a note saying what failed, ``situation`` (when) and what is safe.
    """
    try:
        storage.replace_atomic(INDEX, state.to_bytes(__version__))
    except OSError as err:
        add_note(
            err,
            f"highmark: writing {storage.url}/{INDEX} failed {situation}; no checkpoint was "
            "deleted and the file is left as it was: the next open re-indexes from the "
            "checkpoints' manifests whatever it lacks",
        )
        raise


def _committed(storage: Storage, read_only: bool) -> list[str]:
    """The committed checkpoint dirs; uncommitted ones are removed unless ``read_only``."""
    names = []
    for name in storage.listdir():
        if parse_step_dir(name) is None:
            continue
        if storage.is_committed(name):
            names.append(name)
        elif not read_only:
            log.info("%s: removing uncommitted %s", storage.url, name)
            storage.remove_tree(name)
    return names


def _add_from_manifests(
    storage: Storage, state: IndexState, names: list[str], quiet: bool, level: int
) -> int:
    """Adds an entry for each of ``names`` missing from ``state`` from its verified manifest;
    returns how many were added (a dir whose manifest fails its checks is left out). Each
    re-added entry is logged at ``level`` unless ``quiet``."""
    added = 0
    for name in names:
        step = parse_step_dir(name)
        if step is None or step in state.entries:
            continue
        try:
            manifest = fmt.read_manifest(storage, name)
        except CorruptCheckpointError as err:
            log.warning("%s: not indexing %s: %s", storage.url, name, err)
            continue
        state.entries[step] = entry_from_manifest(storage, name, manifest)
        added += 1
        if not quiet:
            log.log(level, "%s: re-indexed committed %s missing from the index", storage.url, name)
    return added


def open_index(storage: Storage, monitor: Monitor | None, read_only: bool) -> IndexState:
    """Loads the index, checks it and reconciles it with the directory (see the module doc).

    Raises:
        IncompatibleFormatError: the index was written in a newer format than this library reads.
        OSError: a writable open could not write the index (with a note saying what is safe).
    """
    url = storage.url
    if not read_only:
        for name in storage.recover():
            log.info("%s: removed leftover %s of an interrupted save", url, name)
    loaded, problem = read_index(storage)
    rebuild = loaded is None or not loaded.checked
    if loaded is not None and loaded.checked:
        state = loaded
    elif loaded is not None:  # no checksum: only the monitor and the retention log were read
        state = IndexState(monitor=loaded.monitor, retention_log=loaded.retention_log)
    else:
        state = IndexState()
    names = _committed(storage, read_only)
    # A reader races the writer's commit-then-index and index-then-delete: not worth a warning.
    drift = logging.INFO if read_only else logging.WARNING
    added = _add_from_manifests(storage, state, names, quiet=rebuild, level=drift)
    if problem:
        log.warning(
            "%s: %s; rebuilt the index's %d entries from the checkpoints' manifests (the monitor "
            "and retention log it held are not used)", url, problem, added,
        )  # fmt: skip
    elif loaded is not None and not loaded.checked:
        log.info("%s: %s has no checksum (written by an older highmark); rebuilt its %d entries "
                 "from the checkpoints' manifests", url, INDEX, added)  # fmt: skip
    elif loaded is None and added:
        log.warning("%s: no %s; built it from the manifests of %d checkpoints", url, INDEX, added)
    changed = rebuild or added > 0
    present = {parse_step_dir(name) for name in names}
    for step in sorted(set(state.entries) - present):
        log.log(drift, "%s: dropping %s from the index: its directory is gone", url, step_dir(step))
        del state.entries[step]
        changed = True
    config = monitor.config() if monitor else None
    if added or state.monitor != config or state.best_step not in state.entries:
        if state.monitor is not None and config is not None and state.monitor != config:
            log.warning("%s: monitor changed from %s to %s; re-ranking", url, state.monitor, config)
        state.monitor = config
        best = best_record(records(state), monitor) if monitor else None
        changed = changed or state.best_step != (best.step if best else None)
        state.best_step = best.step if best else None
    if changed and not read_only:
        write_index(storage, state, "at open (bringing it up to date with the checkpoint dirs)")
    return state
