"""Finding runs under a folder or URL, and reading one run's files without changing anything.

A run is a directory holding a checkpoint index (``highmark.json``), ``run.json``,
``history.jsonl`` or a committed ``step-*`` directory. :func:`discover` walks a folder for them
(recursively, a bounded number of levels and runs; a run's own subfolders are not searched);
:func:`read_run` reads one through a read-only :class:`~highmark.store.manager.CheckpointManager`
(no lock taken, nothing written).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from highmark.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_RUNS", "RunFiles", "discover", "join", "read_run", "run_name"]

logger = logging.getLogger(__name__)

MAX_DEPTH = 6  # folders below the root that are searched for runs
MAX_RUNS = 500  # runs listed at most (the first ones in name order)


def join(root: str, rel: str) -> str:
    """The URL (or path) of ``rel`` below ``root``."""
    return f"{root.rstrip('/')}/{rel}" if rel else root


def run_name(url: str) -> str:
    """A run's display name: the last component of its URL."""
    return posixpath.basename(str(url).rstrip("/")) or str(url)


def _is_run(names: list[str]) -> bool:
    from highmark.store.index import INDEX, parse_step_dir
    from highmark.store.runfiles import HISTORY_FILE, RUN_FILE

    return any(n in (INDEX, RUN_FILE, HISTORY_FILE) or parse_step_dir(n) is not None for n in names)


def discover(
    root: str,
    storage_options: Mapping[str, Any] | None = None,
    max_depth: int = MAX_DEPTH,
    max_runs: int = MAX_RUNS,
) -> dict[str, str]:
    """The runs at or below ``root``, as ``{run id: url}`` in id order.

    The id is the run's path relative to ``root`` (``"sweep/lr-0.1"``); when ``root`` is a run
    itself, its only id is its name. Hidden entries (``.name``) are skipped.

    Raises:
        ConfigError: ``root`` is neither a run nor a folder (a local path that does not exist).
    """
    from highmark.errors import HighmarkError
    from highmark.store.index import parse_step_dir
    from highmark.store.local import open_storage

    storage = open_storage(root, storage_options=dict(storage_options or {}))
    names = storage.listdir("")
    if _is_run(names):
        return {run_name(root): root}
    if not names and storage.is_local and not storage.exists(""):
        raise ConfigError(f"{root}: no such folder; give a run or a folder of runs")
    found: dict[str, str] = {}
    pending = [(n, 1) for n in sorted(names, reverse=True)]
    while pending and len(found) < max_runs:
        rel, depth = pending.pop()
        base = posixpath.basename(rel)
        if base.startswith(".") or parse_step_dir(base) is not None:
            continue
        try:
            children = storage.listdir(rel)
        except (HighmarkError, OSError) as exc:  # e.g. a name no run path may hold
            logger.info("%s: skipped (%s)", join(root, rel), exc)
            continue
        if _is_run(children):
            found[rel] = join(root, rel)
        elif depth < max_depth:
            pending += [(f"{rel}/{c}", depth + 1) for c in sorted(children, reverse=True)]
    return dict(sorted(found.items()))


@dataclass
class RunFiles:
    """What one run's files say: ``run.json``, the history records and the kept checkpoints.

    ``error`` holds why a part could not be read (the rest is still shown).
    """

    url: str
    info: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    monitor: str | None = None
    mode: str | None = None
    error: str | None = None


def _checkpoints(files: RunFiles, storage: Any) -> None:
    from highmark.policy.monitor import Monitor
    from highmark.store.index import INDEX, load_index
    from highmark.store.manager import CheckpointManager

    state = load_index(storage) if storage.exists(INDEX) else None
    if state is None:
        return
    monitor = Monitor.from_config(state.monitor) if state.monitor else None
    if monitor is not None:
        files.monitor, files.mode = monitor.key, monitor.mode
    with CheckpointManager(storage, monitor=monitor, read_only=True) as manager:
        files.checkpoints = [
            {
                "step": c.step,
                "metrics": dict(c.metrics),
                "size": c.size,
                "created": c.created,
                "is_best": c.is_best,
                "is_latest": c.is_latest,
                "kept_by": c.kept_by,
            }
            for c in manager.checkpoints()
        ]


def read_run(url: str, storage_options: Mapping[str, Any] | None = None) -> RunFiles:
    """Reads a run's ``run.json``, ``history.jsonl`` and checkpoint index, each only if present.

    Never raises for a damaged or half-written run: what could not be read is named in
    :attr:`RunFiles.error` and left empty.
    """
    from highmark.errors import HighmarkError
    from highmark.store.local import open_storage
    from highmark.store.runfiles import HISTORY_FILE, RUN_FILE, parse_history, parse_run_info

    files = RunFiles(url)
    problems: list[str] = []
    storage = open_storage(url, storage_options=dict(storage_options or {}))
    for name in (RUN_FILE, HISTORY_FILE):
        try:
            if not storage.exists(name):
                continue
            data = storage.read_bytes(name)
            if name == RUN_FILE:
                files.info = parse_run_info(data, where=join(url, name))
            else:
                files.records = parse_history(data, where=join(url, name))
        except (HighmarkError, OSError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    try:
        _checkpoints(files, storage)
    except (HighmarkError, OSError, ValueError) as exc:
        problems.append(f"checkpoints: {exc}")
    files.monitor = files.info.get("monitor") or files.monitor
    files.mode = files.info.get("mode") or files.mode
    if not files.records and files.checkpoints:  # no history: the checkpoints' metrics are it
        files.records = [{"step": c["step"], "metrics": c["metrics"]} for c in files.checkpoints]
    if problems:
        files.error = "; ".join(problems)
        logger.warning("%s: %s", url, files.error)
    return files
