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
from dataclasses import dataclass, field
from typing import Any

from highmark.errors import CorruptCheckpointError, IncompatibleFormatError
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
    """The verification result of one checkpoint."""

    step: int
    path: str
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every file is present and matches its checksum."""
        return not self.problems


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
        return [(f"{c.path}/{rel}", why) for c in self.checkpoints for rel, why in c.problems]


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
