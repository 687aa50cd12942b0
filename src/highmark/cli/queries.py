"""What the ``highmark`` commands show about runs: plain data for tables and ``--json``.

Every function here reads a run (local path or fsspec URL) through a read-only
:class:`~highmark.CheckpointManager` and returns JSON-ready dicts; nothing prints. Non-finite
metric values become ``None`` in these dicts, so the ``--json`` output is strict JSON.
"""

from __future__ import annotations

import math
import posixpath
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from highmark.errors import CheckpointError, ConfigError

__all__ = [
    "Which",
    "checkpoint_dir",
    "compare_runs",
    "find_runs",
    "list_checkpoints",
    "list_runs",
    "open_run",
    "parse_spec",
    "prune_run",
    "show_checkpoint",
    "strict",
    "verify_run",
]

Which = str | int
_SPEC = re.compile(r"(?P<run>.+?):(?P<which>[0-9]+|best|latest)")  # whole spec, ASCII digits


def parse_spec(spec: str, default: Which = "latest") -> tuple[str, Which]:
    """Splits ``RUN[:STEP|:best|:latest]`` into the run and which checkpoint.

    >>> parse_spec("runs/a:best")
    ('runs/a', 'best')
    >>> parse_spec("s3://bucket/run:12")
    ('s3://bucket/run', 12)
    """
    match = _SPEC.fullmatch(spec)
    if match is None or match["run"].endswith(":/"):
        return spec, default
    which = match["which"]
    return match["run"], int(which) if which.isdigit() else which


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively), for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def _strict_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(strict(value))


@contextmanager
def open_run(
    url: str, storage_options: Mapping[str, Any] | None = None, read_only: bool = True
) -> Iterator[Any]:
    """A :class:`~highmark.CheckpointManager` over an existing run, closed on exit."""
    from highmark.errors import CheckpointNotFoundError
    from highmark.policy.monitor import Monitor
    from highmark.store.index import INDEX, load_index
    from highmark.store.local import open_storage
    from highmark.store.manager import CheckpointManager

    storage = open_storage(url, storage_options=dict(storage_options or {}))
    state = load_index(storage) if storage.exists(INDEX) else None
    if state is None and not _has_checkpoints(storage):
        _check_selector(url, storage_options)
        raise CheckpointNotFoundError(f"{url}: not a highmark run (no {INDEX}, no checkpoints)")
    # The run's own monitor, so ranking (best) is the one the run recorded, never re-ranked.
    monitor = Monitor.from_config(state.monitor) if state and state.monitor else None
    manager = CheckpointManager(storage, monitor=monitor, read_only=read_only)
    try:
        yield manager
    finally:
        manager.close()


def _check_selector(spec: str, storage_options: Mapping[str, Any] | None) -> None:
    """Raises ConfigError when ``spec`` is ``RUN:WORD``, RUN a run and WORD no checkpoint name."""
    run, _, word = spec.rpartition(":")
    if not run or not word or "/" in word:  # no selector, or a URL's scheme (s3://...)
        return
    try:
        with open_run(run, storage_options) as manager:
            steps = [c.step for c in manager.checkpoints()]
    except (OSError, ConfigError, CheckpointError):
        return
    raise ConfigError(
        f"{spec}: {word!r} names no checkpoint of {run}; use {run}:best, {run}:latest or "
        f"{run}:STEP (steps: {', '.join(map(str, steps)) or 'none'})"
    )


def _has_checkpoints(storage: Any, rel: str = "") -> bool:
    """Whether the directory holds checkpoint dirs (a run that crashed before its first index)."""
    from highmark.store.index import parse_step_dir

    try:
        return any(parse_step_dir(name) is not None for name in storage.listdir(rel))
    except (FileNotFoundError, NotADirectoryError):
        return False


def _is_run(storage: Any, rel: str = "") -> bool:
    """Whether ``rel`` (the root when empty) holds a run: its index, run files or checkpoints."""
    from highmark.store.index import INDEX
    from highmark.store.runfiles import HISTORY_FILE, RUN_FILE

    names = (INDEX, RUN_FILE, HISTORY_FILE)
    try:
        found = any(storage.exists(f"{rel}/{n}" if rel else n) for n in names)
        return found or _has_checkpoints(storage, rel)
    except (OSError, ValueError):
        return False


def find_runs(urls: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The runs that command-line arguments name: each a run, or a folder of runs.

    A folder of runs is a folder that is no run itself and whose direct subfolders include runs;
    it stands for those runs, in name order. Only one level is searched (runs in the subfolders
    of its subfolders are not). Any other argument is kept as given, so that opening it says what
    is wrong.
    """
    from highmark.store.local import open_storage

    found: list[str] = []
    for url in urls:
        storage = open_storage(url, storage_options=dict(storage_options or {}))
        names = [] if _is_run(storage) else storage.listdir()
        children = [n for n in names if not n.startswith(".") and _is_run(storage, n)]
        found += [f"{url.rstrip('/')}/{name}" for name in children] or [url]
    return found


def checkpoint_dir(info: Any) -> str:
    """The checkpoint's directory relative to the run root (its ``path``'s last component)."""
    return posixpath.basename(str(info.path).rstrip("/"))


def _monitor(manager: Any) -> Any:
    return getattr(manager, "monitor", None)


def _flags(info: Any) -> list[str]:
    flags = [name for name in ("best", "latest") if getattr(info, f"is_{name}", False)]
    kept = info.kept_by or ""
    kept = " ".join(kept) if isinstance(kept, (list, tuple)) else str(kept)
    if "every" in kept.lower():
        flags.append("milestone")
    return flags


def _row(info: Any, key: str | None, now: float) -> dict[str, Any]:
    value = info.metrics.get(key) if key else None
    return _strict_dict({
        "step": info.step,
        "monitored": value,
        "metrics": dict(info.metrics),
        "size": info.size,
        "created": info.created,
        "age_s": max(0.0, now - float(info.created)),
        "flags": _flags(info),
        "kept_by": info.kept_by,
        "path": str(info.path),
    })  # fmt: skip


def list_checkpoints(manager: Any, now: float | None = None) -> dict[str, Any]:
    """The ``ls`` data: one row per checkpoint (step order) and the totals."""
    monitor = _monitor(manager)
    key = getattr(monitor, "key", None)
    now = time.time() if now is None else now
    rows = [_row(info, key, now) for info in sorted(manager.checkpoints(), key=lambda i: i.step)]
    return {
        "run": str(manager.directory),
        "monitor": key,
        "mode": getattr(monitor, "mode", None),
        "checkpoints": rows,
        "count": len(rows),
        "total_bytes": sum(int(r["size"]) for r in rows),
    }


def list_runs(
    url: str, storage_options: Mapping[str, Any] | None = None, now: float | None = None
) -> dict[str, Any]:
    """The ``ls`` data of a run, or of every run in a folder of runs (see :func:`find_runs`).

    A folder gives ``{"folder", "runs": [one run's data], "count", "total_bytes"}``.
    """
    urls = find_runs([url], storage_options)
    runs = []
    for run in urls:
        with open_run(run, storage_options) as manager:
            runs.append(list_checkpoints(manager, now))
    if urls == [url]:
        return runs[0]
    return {
        "folder": url,
        "runs": runs,
        "count": sum(r["count"] for r in runs),
        "total_bytes": sum(r["total_bytes"] for r in runs),
    }


def verify_run(manager: Any) -> dict[str, Any]:
    """The ``verify`` data: every checkpoint's files rechecked against their checksums."""
    report = manager.verify()
    return {
        "run": str(manager.directory),
        "ok": report.ok,
        "checkpoints": len(report.checkpoints),
        "damaged": [
            {"step": c.step, "file": path, "problem": why}
            for c in report.checkpoints
            for path, why in c.damaged
        ],
    }


def show_checkpoint(manager: Any, which: Which) -> dict[str, Any]:
    """The ``show`` data: metadata, metrics, files and checksums, tensor keys/shapes/dtypes."""
    info = manager.info(which)
    manifest = manager.manifest(which)
    files = [f for f in manifest.get("files", []) if isinstance(f, Mapping)]
    return _strict_dict({
        "run": str(manager.directory),
        "step": info.step,
        "path": str(info.path),
        "created": info.created,
        "size": info.size,
        "flags": _flags(info),
        "kept_by": info.kept_by,
        "metrics": dict(info.metrics),
        "metadata": dict(info.metadata or {}),
        "format": manifest.get("format"),
        "files": [
            {"name": f.get("name"), "size": f.get("size"), "xxh3": f.get("xxh3"),
             "tensors": len(f.get("tensors", []))}
            for f in files
        ],
        "tensors": [
            {"key": t.get("name"), "dtype": t.get("dtype"), "shape": t.get("shape"),
             "kind": t.get("kind"), "xxh3": t.get("xxh3"), "file": f.get("name")}
            for f in files
            for t in f.get("tensors", [])
        ],
    })  # fmt: skip


def _run_summary(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    from highmark.store.runfiles import read_run_info

    info = read_run_info(url, storage_options=dict(storage_options or {})) or {}
    with open_run(url, storage_options) as manager:
        checkpoints = manager.checkpoints()
        best = manager.best
        monitor = _monitor(manager)
    key = info.get("monitor") or getattr(monitor, "key", None)
    mode = info.get("mode") or getattr(monitor, "mode", None)
    best_step = info.get("best_step", best.step if best is not None else None)
    best_metrics = info.get("best_metrics") or (dict(best.metrics) if best is not None else {})
    unit = info.get("unit", "epoch")
    return _strict_dict({
        "run": posixpath.basename(url.rstrip("/")) or url,
        "url": url,
        "monitor": key,
        "mode": mode,
        "best_step": best_step,
        "best_value": best_metrics.get(key) if key else None,
        "best_metrics": best_metrics,
        "status": info.get("status"),
        "stop_reason": info.get("stop_reason"),
        "stop_cause": info.get("stop_cause"),
        "stop_step": info.get("stop_step"),
        "unit": unit,
        "run_length": info.get("epochs_run" if unit == "epoch" else "steps_run"),
        "budget": info.get("budget"),
        "wall_time": info.get("wall_time"),
        "checkpoints": len(checkpoints),
        "bytes": sum(int(c.size) for c in checkpoints),
        "winner": False,
    })  # fmt: skip


def compare_runs(
    urls: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``compare`` data: one summary per run and the winner (best monitored value).

    The winner is decided with the runs' :class:`~highmark.Monitor` (strictly better, the earlier
    run on ties); runs that monitor different metrics or modes have no winner.
    """
    from highmark.policy.monitor import Monitor

    runs = [_run_summary(u, storage_options) for u in urls]
    keys = {(r["monitor"], r["mode"]) for r in runs}
    winner, note = None, ""
    if len(keys) != 1 or None in next(iter(keys)):
        note = "runs monitor different metrics or modes: no winner"
    else:
        key, mode = next(iter(keys))
        monitor = Monitor(key, mode=mode)
        for index, run in enumerate(runs):
            value = run["best_value"]
            if value is None:
                continue
            if winner is None or monitor.is_better(value, runs[winner]["best_value"]):
                winner = index
        if winner is None:
            note = f"no run has a finite {key}"
    if winner is not None:
        runs[winner]["winner"] = True
    return {
        "runs": runs,
        "winner": None if winner is None else runs[winner]["run"],
        "note": note,
    }


def _ranking(manager: Any, monitor: str | None, mode: str | None) -> Any:
    """The Monitor that ``--keep-best`` ranks by: ``monitor`` (mode resolved), else the run's."""
    from highmark.policy.monitor import Monitor
    from highmark.replay.grid import resolve_mode

    recorded = _monitor(manager)
    if monitor is None and recorded is None:
        raise ConfigError(
            f"{manager.url}: the run records no monitored metric, so --keep-best cannot rank its "
            "checkpoints: pass --monitor KEY (and --mode min|max when its name does not say)"
        )
    if recorded is not None and monitor in (None, recorded.key):
        if mode in (None, "auto", recorded.mode):
            return recorded
        config = {**recorded.config(), "mode": resolve_mode(recorded.key, mode)}
        return Monitor.from_config(config)
    assert monitor is not None
    return Monitor(monitor, mode=resolve_mode(monitor, mode))


def prune_run(
    manager: Any,
    keep_best: int | None,
    keep_last: int | None,
    keep_every: int | None,
    dry_run: bool,
    monitor: str | None = None,
    mode: str | None = "auto",
) -> dict[str, Any]:
    """Applies (or, with ``dry_run``, only decides) the library's retention rules on a run.

    ``keep_best`` ranks by ``monitor`` (default: the run's recorded monitor) in ``mode``
    (``"auto"``: the run's recorded mode for its own monitor, else the one the metric's name
    implies); a run without a recorded monitor needs ``monitor``.

    Returns:
        ``{"delete": [{step, size, reason}], "keep": [{step, reason}], "bytes_freed", "dry_run"}``.
    """
    from highmark.policy.retention import retention_from_flags

    if not (keep_best or keep_last or keep_every):
        raise ConfigError("prune would delete every checkpoint: give --keep-best/-last/-every")
    ranking = _ranking(manager, monitor, mode) if keep_best else _monitor(manager)
    sizes = {c.step: int(c.size) for c in manager.checkpoints()}
    retention = retention_from_flags(ranking, keep_best, keep_last, keep_every)
    decision = manager.prune(retention, dry_run=dry_run)
    delete = [
        {"step": s, "size": sizes.get(s, 0), "reason": r}
        for s, r in sorted(decision.delete.items())
    ]
    return {
        "run": str(manager.directory),
        "dry_run": dry_run,
        "delete": delete,
        "keep": [{"step": s, "reason": r} for s, r in sorted(decision.keep.items())],
        "bytes_freed": sum(d["size"] for d in delete),
    }
