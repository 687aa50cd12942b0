"""The dashboard's change feed: which runs changed since the last look, by polling their files.

A run changes when its ``history.jsonl`` (a new evaluation), ``run.json`` (start, stop, end) or
checkpoint index (a save, a deletion) changes. Each poll reads one signature per file: size,
modification time and inode from ``stat`` on local disk; size and ETag (else modification time)
from the object store's metadata, with fsspec's listing cache dropped first. Only runs whose
signature changed are read again. New runs are found by walking the root again every
``rediscover`` seconds. Nothing here writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from highmark.serve.payload import run_payload, summary
from highmark.serve.runs import discover, read_run

__all__ = ["RunFeed"]

logger = logging.getLogger(__name__)

_WATCHED = ("history.jsonl", "run.json", "highmark.json")


def _local_signature(path: str) -> tuple[Any, ...]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (None,)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _remote_signature(fs: Any, path: str) -> tuple[Any, ...]:
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return (None,)
    stamp = info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created")
    return (info.get("size"), str(stamp))


def signature(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """The change signature of a run: one entry per watched file (``(None,)`` when absent)."""
    from highmark.store.local import open_storage

    storage: Any = open_storage(url, storage_options=dict(storage_options or {}))
    if storage.is_local:
        return tuple(_local_signature(storage.local_path(name)) for name in _WATCHED)
    return tuple(_remote_signature(storage.fs, storage._path(name)) for name in _WATCHED)


class RunFeed:
    """The runs under one root, their summaries, and which of them changed at each :meth:`poll`.

    Thread-safe: :meth:`poll` runs in a worker thread while requests read :meth:`summaries` and
    :meth:`payload`.

    Args:
        root: a run or a folder of runs (local path or fsspec URL).
        storage_options: fsspec options for URLs.
        rediscover: seconds between two walks of ``root`` for new or removed runs.
        clock: seconds clock (``time.monotonic``).
    """

    def __init__(
        self,
        root: str,
        storage_options: Mapping[str, Any] | None = None,
        rediscover: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.storage_options = dict(storage_options or {})
        self.rediscover = rediscover
        self._clock = clock
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._signatures: dict[str, tuple[Any, ...]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._found_at: float | None = None

    def summaries(self) -> list[dict[str, Any]]:
        """The runs table, in run id order (as of the last poll)."""
        with self._lock:
            return [self._summaries[i] for i in sorted(self._summaries)]

    def payload(self, run_id: str) -> dict[str, Any] | None:
        """A run's summary and curves (read when first asked, then after each change); None for
        an id that names no run found under the root."""
        with self._lock:
            url = self._urls.get(run_id)
            cached = self._payloads.get(run_id)
        if url is None:
            return None
        if cached is None:
            cached = run_payload(run_id, read_run(url, self.storage_options))
            with self._lock:
                if run_id in self._urls:
                    self._payloads[run_id] = cached
        return cached

    def _discover(self) -> dict[str, str]:
        now = self._clock()
        if self._found_at is not None and now - self._found_at < self.rediscover:
            return self._urls
        self._found_at = now
        return discover(self.root, self.storage_options)

    def poll(self) -> list[str]:
        """Looks at every run once; returns the ids of runs that changed, appeared or went."""
        urls = self._discover()
        changed = [i for i in self._urls if i not in urls]
        fresh: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {}
        for run_id, url in urls.items():
            try:
                sig = signature(url, self.storage_options)
            except OSError as exc:
                logger.warning("%s: cannot read (%s)", url, exc)
                continue
            if self._signatures.get(run_id) == sig and run_id in self._summaries:
                continue
            fresh[run_id] = (summary(run_id, read_run(url, self.storage_options)), sig)
            changed.append(run_id)
        with self._lock:
            for gone in [i for i in self._urls if i not in urls]:
                for table in (self._signatures, self._summaries, self._payloads):
                    table.pop(gone, None)
            self._urls = dict(urls)
            for run_id, (row, sig) in fresh.items():
                self._summaries[run_id], self._signatures[run_id] = row, sig
                self._payloads.pop(run_id, None)
        return changed
