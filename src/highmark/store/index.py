"""The run index ``highmark.json``: checkpoints, ranking state and retention log.

The index is a cache of what the directory holds plus what only it can remember: the ranking
state (the best step and score, as the stopper saw them) and the retention log. It is replaced
atomically after every commit and before any deletion. The directory is the source of truth:
:func:`reconcile` re-adds committed checkpoints the index misses (a crash between commit and index
write) and drops entries whose directory is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from highmark.__about__ import __version__
from highmark.errors import (
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleFormatError,
)
from highmark.policy.monitor import Monitor
from highmark.policy.retention import RetentionDecision, best_record, monitored_value
from highmark.store.backend import Storage

__all__ = [
    "INDEX",
    "INDEX_FORMAT",
    "CheckpointInfo",
    "CheckpointStatus",
    "Entry",
    "VerifyReport",
    "load_index",
    "parse_step_dir",
    "step_dir",
]

log = logging.getLogger(__name__)

INDEX = "highmark.json"
INDEX_FORMAT = 1
LOG_LIMIT = 1000
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


def step_dir(step: int) -> str:
    """The directory name of a checkpoint: ``step-00000042``."""
    return f"step-{step:08d}"


def parse_step_dir(name: str) -> int | None:
    """The step of a checkpoint directory name, or None for any other name."""
    m = _STEP_DIR.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint: its step, metrics, metadata, size in bytes and where it lives.

    ``is_best``/``is_latest`` are as of when the info was made; ``kept_by`` says which retention
    rules keep it.
    """

    step: int
    metrics: dict[str, float]
    metadata: dict[str, Any]
    size: int
    created: float
    path: str
    is_best: bool = False
    is_latest: bool = False
    kept_by: str = ""


@dataclass
class CheckpointStatus:
    """The verification result of one checkpoint (problems: run-relative file, reason)."""

    step: int
    path: str
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every file is present and matches its checksum."""
        return not self.problems

    @property
    def damaged(self) -> list[tuple[str, str]]:
        """Every damaged or missing file as (its full path, reason); the checkpoint's own path
        when the problem is the checkpoint as a whole."""
        root = self.path.rstrip("/").rpartition("/")[0]
        return [(f"{root}/{rel}" if rel else self.path, why) for rel, why in self.problems]


@dataclass
class VerifyReport:
    """Which checkpoints and files are intact or damaged (verification never raises for damage)."""

    checkpoints: list[CheckpointStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every checkpoint verified intact."""
        return all(c.ok for c in self.checkpoints)

    @property
    def damaged(self) -> list[tuple[str, str]]:
        """Every damaged or missing file as (path, reason)."""
        return [item for c in self.checkpoints for item in c.damaged]


@dataclass
class Entry:
    """An index entry (the mutable, JSON-facing twin of :class:`CheckpointInfo`)."""

    step: int
    metrics: dict[str, float]
    metadata: dict[str, Any]
    size: int
    created: float
    kept_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "dir": step_dir(self.step),
            "metrics": self.metrics,
            "metadata": self.metadata,
            "size": self.size,
            "created": self.created,
            "kept_by": self.kept_by,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Entry:
        try:
            step = raw["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"bad step {step!r}")
            if raw.get("dir", step_dir(step)) != step_dir(step):
                raise ValueError(f"dir {raw.get('dir')!r} does not match step {step}")
            metrics = {str(k): float(v) for k, v in dict(raw.get("metrics") or {}).items()}
            metadata = dict(raw.get("metadata") or {})
            return cls(step, metrics, metadata, int(raw.get("size", 0)), float(raw["created"]),
                       str(raw.get("kept_by", "")))  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptCheckpointError(where, f"bad checkpoint entry: {err}") from None


@dataclass
class IndexState:
    """The parsed index."""

    entries: dict[int, Entry] = field(default_factory=dict)
    best_step: int | None = None
    monitor: dict[str, Any] | None = None
    retention_log: list[dict[str, Any]] = field(default_factory=list)

    def resolve(self, which: str | int, url: str) -> int:
        """The step ``"latest"``, ``"best"`` or a step number names; CheckpointNotFoundError."""
        if which == "latest":
            if self.entries:
                return max(self.entries)
        elif which == "best":
            if self.best_step is not None:
                return self.best_step
        elif isinstance(which, int) and not isinstance(which, bool):
            if which in self.entries:
                return which
        else:
            raise ConfigError(f"which must be 'latest', 'best' or a step, got {which!r}")
        steps = sorted(self.entries) or "none"
        raise CheckpointNotFoundError(f"{url}: no checkpoint {which!r} (steps: {steps})")

    def protected(self, extra: Mapping[int, str]) -> dict[int, str]:
        """The steps retention must keep: ``extra`` plus the latest and the best."""
        out = dict(extra)
        if self.entries:
            out.setdefault(max(self.entries), "latest")
        if self.best_step is not None:
            out[self.best_step] = "best"
        return out

    def record_decision(self, decision: RetentionDecision, trigger: int | None) -> list[str]:
        """Applies a retention decision to the entries and the log; returns its notes."""
        now = time.time()
        for step, why in decision.keep.items():
            if step in self.entries:
                self.entries[step].kept_by = why
        for step, why in decision.delete.items():
            self.entries.pop(step, None)
            self.retention_log.append(
                {"time": now, "trigger": trigger, "step": step, "action": "delete", "reason": why}
            )
        del self.retention_log[:-LOG_LIMIT]
        return list(decision.notes)

    def to_bytes(self, library_version: str) -> bytes:
        best = self.entries.get(self.best_step) if self.best_step is not None else None
        data = {
            "format": INDEX_FORMAT,
            "highmark": library_version,
            "monitor": self.monitor,
            "checkpoints": [self.entries[s].to_json() for s in sorted(self.entries)],
            "ranking": {
                "best_step": self.best_step if best is not None else None,
                "best_metrics": best.metrics if best is not None else None,
            },
            "retention_log": self.retention_log[-LOG_LIMIT:],
        }
        return json.dumps(data, indent=1, allow_nan=True).encode()


def load_index(storage: Storage) -> IndexState | None:
    """Reads ``highmark.json``; None when absent or unreadable (then it is rebuilt from dirs).

    Raises:
        IncompatibleFormatError: the index was written in a newer format than this library reads.
    """
    where = f"{storage.url}/{INDEX}"
    if not storage.exists(INDEX):
        return None
    try:
        raw = json.loads(storage.read_bytes(INDEX))
        version = raw["format"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: unreadable index (%s); rebuilding it from the checkpoint dirs", where, err)
        return None
    if not isinstance(version, int) or version > INDEX_FORMAT:
        raise IncompatibleFormatError(
            f"{where}: index format {version!r} is newer than this highmark reads "
            f"(format {INDEX_FORMAT}); upgrade highmark"
        )
    state = IndexState()
    try:
        for item in raw.get("checkpoints", []):
            entry = Entry.from_json(item, where)
            state.entries[entry.step] = entry
        ranking = raw.get("ranking") or {}
        best = ranking.get("best_step")
        state.best_step = best if isinstance(best, int) and best in state.entries else None
        state.monitor = raw.get("monitor")
        state.retention_log = list(raw.get("retention_log") or [])
    except (CorruptCheckpointError, AttributeError, TypeError) as err:
        log.warning("%s: damaged index (%s); rebuilding it from the checkpoint dirs", where, err)
        return None
    return state


def entry_from_manifest(storage: Storage, name: str, manifest: dict[str, Any]) -> Entry:
    """An index entry rebuilt from a committed checkpoint's manifest."""
    from highmark.store.format import MANIFEST

    step = parse_step_dir(name)
    assert step is not None
    size = sum(int(f.get("size", 0)) for f in manifest.get("files", []))
    with contextlib.suppress(OSError):
        size += storage.size(f"{name}/{MANIFEST}")
    metrics = {}
    for k, v in dict(manifest.get("metrics") or {}).items():
        try:
            metrics[str(k)] = float(v)
        except (TypeError, ValueError):
            metrics[str(k)] = math.nan
    created = manifest.get("created")
    return Entry(
        step=step,
        metrics=metrics,
        metadata=dict(manifest.get("metadata") or {}),
        size=size,
        created=float(created) if isinstance(created, (int, float)) else 0.0,
    )


def records(state: IndexState) -> list[Entry]:
    """The index entries, oldest step first (they are retention records)."""
    return [state.entries[s] for s in sorted(state.entries)]


def would_be_best(state: IndexState, entry: Entry, monitor: Monitor | None) -> int | None:
    """The best step once ``entry`` is added (the stopper's rule: ``monitor.is_improvement``)."""
    best = state.best_step
    value = None if monitor is None else monitored_value(entry, monitor)
    if monitor is None or value is None:
        return best if monitor is not None else None
    current = None if best is None else monitored_value(state.entries[best], monitor)
    if current is None or monitor.is_improvement(value, current):
        return entry.step
    return best


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Metrics as ``{str: float}``; ConfigError names a value that is not a number."""
    out = {}
    for key, value in (metrics or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"metric {key!r} is not a number: {value!r}") from None
    return out


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata as a JSON round-tripped dict; ConfigError when it is not JSON-serialisable."""
    try:
        return dict(json.loads(json.dumps(dict(metadata or {}), allow_nan=True)))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"metadata must be JSON-serialisable: {err}") from None


def recorded_monitor(storage: Storage) -> Monitor | None:
    """The monitor an existing run was ranked by, or None for a new or unranked run."""
    loaded = load_index(storage)
    if loaded is None or loaded.monitor is None:
        return None
    return Monitor.from_config(loaded.monitor)


def open_index(storage: Storage, monitor: Monitor | None, read_only: bool) -> IndexState:
    """Loads the index and reconciles it with the directory, the source of truth.

    Cleans leftovers of interrupted saves (not when ``read_only``), re-adds committed
    checkpoints the index misses (from their manifests), drops entries whose directory is gone
    (with a warning), and re-ranks when the monitor changed; writes the index back if it changed.
    """
    from highmark.store import format as fmt

    url = storage.url
    if not read_only:
        for name in storage.recover():
            log.info("%s: removed leftover %s of an interrupted save", url, name)
    loaded = load_index(storage)
    changed = loaded is None
    state = loaded or IndexState()
    committed: set[int] = set()
    readded = False  # a crash between commit and index write: the ranking must be redone
    for name in storage.listdir():
        step = parse_step_dir(name)
        if step is None:
            continue
        if not storage.is_committed(name):
            if not read_only:
                log.info("%s: removing uncommitted %s", url, name)
                storage.remove_tree(name)
            continue
        committed.add(step)
        if step not in state.entries:
            try:
                manifest = fmt.read_manifest(storage, name)
            except CorruptCheckpointError as err:
                log.warning("%s: not indexing %s: %s", url, name, err)
                continue
            state.entries[step] = entry_from_manifest(storage, name, manifest)
            log.warning("%s: re-indexed committed %s missing from the index", url, name)
            changed = readded = True
    for step in sorted(set(state.entries) - committed):
        log.warning("%s: dropping %s from the index: its directory is gone", url, step_dir(step))
        del state.entries[step]
        changed = True
    config = monitor.config() if monitor else None
    if readded or state.monitor != config or state.best_step not in state.entries:
        if state.monitor is not None and config is not None and state.monitor != config:
            log.warning("%s: monitor changed from %s to %s; re-ranking", url, state.monitor, config)
        state.monitor = config
        best = best_record(records(state), monitor) if monitor else None
        changed = changed or state.best_step != (best.step if best else None)
        state.best_step = best.step if best else None
    if changed and not read_only:
        storage.replace_atomic(INDEX, state.to_bytes(__version__))
    return state


def verify_steps(storage: Storage, steps: list[int], path: Callable[[int], str]) -> VerifyReport:
    """Verifies the files of the given checkpoints; damage is reported, never raised."""
    from highmark.store import format as fmt

    report = VerifyReport()
    for step in steps:
        name = step_dir(step)
        status = CheckpointStatus(step, path(step))
        try:
            if not storage.is_committed(name):
                status.problems.append(("", "not committed"))
            else:
                status.problems.extend(fmt.verify_checkpoint(storage, name))
        except (CorruptCheckpointError, OSError) as err:
            status.problems.append((f"{name}/{fmt.MANIFEST}", str(err)))
        report.checkpoints.append(status)
    return report
