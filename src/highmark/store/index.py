"""The run index ``highmark.json``: checkpoints, ranking state and retention log.

The index is a cache of what the directory holds plus what only it can remember: the ranking
state (the best step and score, as the stopper saw them) and the retention log. It is replaced
atomically after every commit and before any deletion, and is checked like a checkpoint: its last
field is an xxh3-64 of the bytes before it (:func:`seal`), verified before the index is parsed,
and each entry records the checksum of the manifest it was made from. The directory is the source
of truth: :mod:`highmark.store.rebuild` reconciles the index with it at open, and rebuilds the
entries from the checkpoints' verified manifests when the index is damaged or has no checksum.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from highmark.errors import (
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleFormatError,
)
from highmark.policy.monitor import Monitor
from highmark.policy.retention import RetentionDecision, best_record, monitored_value
from highmark.state.skeleton import MAX_DEPTH
from highmark.store.checks import MAX_JSON, hex64, json_depth, load_json, valid_run_id
from highmark.store.storage import Storage

__all__ = [
    "INDEX",
    "INDEX_FORMAT",
    "CheckpointInfo",
    "Entry",
    "load_index",
    "parse_step_dir",
    "read_index",
    "seal",
    "step_dir",
]

log = logging.getLogger(__name__)

INDEX = "highmark.json"
INDEX_FORMAT = 1
LOG_LIMIT = 1000
_STEP_DIR = re.compile(r"step-([0-9]{8,})")
_SEAL = re.compile(rb',\n "checksum": "([0-9a-f]{16})"\n}\n')
_SEAL_SIZE = len(b',\n "checksum": ""\n}\n') + 16
_HEX16 = re.compile(r"[0-9a-f]{16}")


def step_dir(step: int) -> str:
    """The directory name of a checkpoint: ``step-00000042``."""
    return f"step-{step:08d}"


def parse_step_dir(name: str) -> int | None:
    """The step of a checkpoint directory name, or None for any other name.

    Only the names :func:`step_dir` makes: ``step-`` and at least 8 ASCII digits, zero-padded to
    8 and no further, nothing before or after.
    """
    m = _STEP_DIR.fullmatch(name)
    if m is None:
        return None
    step = int(m.group(1))
    return step if step_dir(step) == name else None


def seal(text: bytes) -> bytes:
    """A JSON object's bytes (``{...}``) with a last field ``"checksum"``: the xxh3-64 of the
    bytes before that field, so it is checked before anything is parsed (:func:`read_index`)."""
    body = text.rstrip()
    assert body.endswith(b"}"), "seal() takes a JSON object"
    body = body[:-1].rstrip()
    return body + b',\n "checksum": "' + hex64(xxhash.xxh3_64_intdigest(body)).encode() + b'"\n}\n'


def _sealed(data: bytes) -> bool | None:
    """Whether ``data`` ends with a checksum that matches; None when it ends with none."""
    m = _SEAL.fullmatch(data, max(len(data) - _SEAL_SIZE, 0))
    if m is None:
        return None
    body = data[: len(data) - _SEAL_SIZE]
    return hex64(xxhash.xxh3_64_intdigest(body)) == m.group(1).decode()


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
class Entry:
    """An index entry (the mutable, JSON-facing twin of :class:`CheckpointInfo`)."""

    step: int
    metrics: dict[str, float]
    metadata: dict[str, Any]
    size: int
    created: float
    kept_by: str = ""
    manifest: str = ""  #: the checksum of the manifest the entry was made from ("": unknown)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "dir": step_dir(self.step),
            "metrics": self.metrics,
            "metadata": self.metadata,
            "size": self.size,
            "created": self.created,
            "kept_by": self.kept_by,
            "manifest": self.manifest,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Entry:
        try:
            step = raw["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"bad step {step!r:.40}")
            if raw.get("dir", step_dir(step)) != step_dir(step):
                raise ValueError(f"dir {raw.get('dir')!r:.40} does not match step {step}")
            metrics = {str(k): float(v) for k, v in dict(raw.get("metrics") or {}).items()}
            metadata = dict(raw.get("metadata") or {})
            if json_depth(metadata, MAX_DEPTH) > MAX_DEPTH:
                raise ValueError(f"metadata nests deeper than {MAX_DEPTH} levels")
            manifest = raw.get("manifest", "")
            if manifest != "" and (type(manifest) is not str or not _HEX16.fullmatch(manifest)):
                raise ValueError("bad manifest checksum")
            return cls(step, metrics, metadata, int(raw.get("size", 0)), float(raw["created"]),
                       str(raw.get("kept_by", "")), manifest)  # fmt: skip
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise CorruptCheckpointError(where, f"bad checkpoint entry: {err}") from None


@dataclass
class IndexState:
    """The parsed index.

    ``checked`` is False for an index read without a checksum (written before indexes had one):
    then only its monitor and retention log were read, and its entries are to be rebuilt.
    """

    entries: dict[int, Entry] = field(default_factory=dict)
    best_step: int | None = None
    monitor: dict[str, Any] | None = None
    retention_log: list[dict[str, Any]] = field(default_factory=list)
    checked: bool = True
    run_id: str | None = None  #: the run's identity, recorded in every manifest (identity.py)

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

    def add(self, entry: Entry, monitor: Monitor | None) -> None:
        """Records a committed checkpoint and ranks it by the stopper's rule
        (``monitor.is_improvement``); a best replaced by a new save is re-ranked over all."""
        self.entries[entry.step] = entry
        replaced_best = self.best_step == entry.step
        if replaced_best or would_be_best(self, entry, monitor) == entry.step:
            if replaced_best and monitor is not None:
                best = best_record(records(self), monitor)
                self.best_step = best.step if best else None
            else:
                self.best_step = entry.step

    def drop(self, step: int, monitor: Monitor | None) -> bool:
        """Forgets ``step`` (re-ranking when it was the best); whether the index listed it."""
        if self.entries.pop(step, None) is None:
            return False
        if self.best_step == step:
            best = best_record(records(self), monitor) if monitor else None
            self.best_step = best.step if best else None
        return True

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
            **({"run": self.run_id} if self.run_id is not None else {}),
            "monitor": self.monitor,
            "checkpoints": [self.entries[s].to_json() for s in sorted(self.entries)],
            "ranking": {
                "best_step": self.best_step if best is not None else None,
                "best_metrics": best.metrics if best is not None else None,
            },
            "retention_log": self.retention_log[-LOG_LIMIT:],
        }
        return seal(json.dumps(data, indent=1, allow_nan=True).encode("ascii"))


def load_index(storage: Storage) -> IndexState | None:
    """Reads ``highmark.json``; None when absent, damaged or unreadable (then it is rebuilt).

    Raises:
        IncompatibleFormatError: the index was written in a newer format than this library reads.
    """
    return read_index(storage)[0]


def read_index(storage: Storage) -> tuple[IndexState | None, str]:
    """Reads ``highmark.json``: the state, or None and why it cannot be used ("" when absent).

    The size and the checksum are checked before the index is parsed, what parsing may allocate
    too (:func:`~highmark.store.checks.load_json`), then every field. An index without a
    checksum (written before indexes had one) comes back with ``checked`` False and no entries.

    Raises:
        IncompatibleFormatError: the index was written in a newer format than this library reads.
    """
    where = f"{storage.url}/{INDEX}"
    if not storage.exists(INDEX):
        return None, ""
    try:
        size = storage.size(INDEX)
        if size > MAX_JSON:
            return None, f"the index of {size} bytes is over the limit of {MAX_JSON}"
        data = storage.read_bytes(INDEX)
    except OSError as err:
        return None, f"the index is unreadable ({err})"
    sealed = _sealed(data)
    if sealed is False:
        return None, "the index fails its checksum (it is damaged or was edited)"
    try:
        raw = load_json(data, where)
    except CorruptCheckpointError as err:
        return None, f"the index is damaged ({str(err)[len(where) + 2 :]})"
    version = raw.get("format") if isinstance(raw, dict) else None
    if version is None:
        return None, "the index is damaged (no format version)"
    if type(version) is not int or version > INDEX_FORMAT:
        raise IncompatibleFormatError(
            f"{where}: index format {version!r:.40} is newer than this highmark reads "
            f"(format {INDEX_FORMAT}); upgrade highmark"
        )
    if sealed is None and "checksum" in raw:
        return None, "the index's checksum is not where it belongs (it is damaged)"
    try:
        return _parse_index(raw, where, checked=sealed is True), ""
    except CorruptCheckpointError as err:
        return None, f"the index is damaged ({str(err)[len(where) + 2 :]})"


def _parse_index(raw: dict[str, Any], where: str, checked: bool) -> IndexState:
    """The index's state from its parsed JSON (entries and ranking only when ``checked``)."""
    state = IndexState(checked=checked)
    try:
        if checked:
            for item in raw.get("checkpoints", []):
                entry = Entry.from_json(item, where)
                state.entries[entry.step] = entry
            best = (raw.get("ranking") or {}).get("best_step")
            state.best_step = best if type(best) is int and best in state.entries else None
            run = raw.get("run")
            if run is not None and not valid_run_id(run):
                raise ValueError("the run id is not one (1-64 of [0-9A-Za-z_-])")
            state.run_id = run
        monitor = raw.get("monitor")
        if monitor is not None:
            Monitor.from_config(monitor)  # raises for a malformed config
        state.monitor = monitor
        state.retention_log = list(raw.get("retention_log") or [])
        for item in state.retention_log:
            if not isinstance(item, dict) or json_depth(item, 1) > 1:
                raise ValueError("a retention log record is not a flat object")
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as err:
        raise CorruptCheckpointError(where, f"{type(err).__name__}: {str(err)[:200]}") from None
    return state


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
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"metric {key!r} is not a number: {value!r:.80}") from None
    return out


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata as a JSON round-tripped dict; ConfigError when it is not JSON-serialisable or
    nests deeper than :data:`~highmark.state.skeleton.MAX_DEPTH` levels (what a reader would
    refuse)."""
    metadata = dict(metadata or {})
    if json_depth(metadata, MAX_DEPTH) > MAX_DEPTH:
        raise ConfigError(f"metadata nests deeper than {MAX_DEPTH} levels (the limit)")
    try:
        return dict(json.loads(json.dumps(metadata, allow_nan=True)))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"metadata must be JSON-serialisable: {err}") from None
