"""The run's history files: ``run.json`` (what the run is, where it stands) and ``history.jsonl``.

Both live at the root of a run directory, next to the checkpoints, and are written through the
store's :class:`~highmark.store.storage.Storage`, so they work on local disk and object stores.

``history.jsonl`` holds one JSON object per report::

    {"step": 12, "epoch": 12, "time": 1732570000.1, "metrics": {"val_loss": 0.31, "val_acc": 0.92}}

It is append-only and flushed at every report, so the CLI can plot runs that are still in progress
or that crashed. On local disk a report appends one line; on an object store (where nothing can be
appended) the whole file is replaced by one atomic PUT per report. A line torn by a crash is
skipped when the file is read. When a run resumes from a checkpoint, the reports made after that
checkpoint are dropped (they will be made again), so the file never holds a step twice.

``run.json`` is replaced atomically; :class:`RunInfo` is its one schema, filled by a
:class:`~highmark.Run` and by every framework callback alike. NaN and infinities are written as
JSON ``NaN``/``Infinity`` (what Python's :mod:`json` writes) and read back as floats.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, BinaryIO

from highmark.errors import CorruptCheckpointError, IncompatibleFormatError
from highmark.store.local import LocalStorage, open_storage
from highmark.store.storage import Storage

__all__ = [
    "HISTORY_FILE",
    "RUN_FILE",
    "RUN_FORMAT",
    "HistoryWriter",
    "RunInfo",
    "read_history",
    "read_run_info",
]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
RUN_FORMAT = 1


@dataclass
class RunInfo:
    """``run.json``: what a run watches, where it stands and how it ended; one schema for
    :class:`~highmark.Run` and every framework callback (written with ``"format"`` first).

    ``unit`` is ``"epoch"`` or ``"step"``; ``budget`` the epochs or steps the loop may run;
    ``started`` the first session's start and ``wall_time`` the seconds spent (a Run counts every
    session's, a callback this session's); ``status`` is ``running``, ``stopped``, ``budget``,
    ``failed`` or ``interrupted``; ``stop_cause`` a :class:`~highmark.criteria.StopCause` value;
    ``best_metrics`` the metrics of the best evaluation (a callback: of the best checkpoint);
    ``policy`` the stopper's config; ``resumed`` one ``{"from_step", "at"}`` record per resume;
    ``continued`` why a run that had stopped or used its budget went on (a Run's);
    ``framework`` the integration that wrote it (``None``: a Run).
    """

    monitor: str
    mode: str
    unit: str | None
    budget: int | None
    started: float
    updated: float
    wall_time: float
    status: str
    stop_reason: str | None = None
    stop_cause: str | None = None
    stop_step: int | None = None
    best_step: int | None = None
    best_metrics: dict[str, Any] | None = None
    epochs_run: int | None = None
    steps_run: int | None = None
    policy: dict[str, Any] | None = None
    resumed: list[dict[str, Any]] = field(default_factory=list)
    continued: str | None = None
    framework: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The content of ``run.json``: ``"format"``, then every field in order."""
        return {"format": RUN_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}


def _open(directory: str | os.PathLike[str], storage_options: Mapping[str, Any] | None) -> Storage:
    return open_storage(directory, storage_options=dict(storage_options or {}))


def read_history(
    directory: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Reads the metrics history of a run, one dict per report, in the order they were made.

    Args:
        directory: the run directory (local path or fsspec URL).
        storage_options: passed to fsspec for remote directories.

    Returns:
        The records (``step``, ``epoch``, ``time``, ``metrics``); an empty list when the run has
        no history yet. A line torn by a crash is skipped with a warning.
    """
    storage = _open(directory, storage_options)
    if not storage.exists(HISTORY_FILE):
        return []
    return parse_history(storage.read_bytes(HISTORY_FILE), where=_where(storage, HISTORY_FILE))


def read_run_info(
    directory: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Reads ``run.json`` of a run directory; ``None`` when the directory holds none.

    Raises:
        CorruptCheckpointError: the file is not a JSON object.
        IncompatibleFormatError: the file was written by a newer highmark.
    """
    storage = _open(directory, storage_options)
    if not storage.exists(RUN_FILE):
        return None
    return parse_run_info(storage.read_bytes(RUN_FILE), where=_where(storage, RUN_FILE))


def parse_run_info(data: bytes, where: str = RUN_FILE) -> dict[str, Any]:
    """Decodes and checks the bytes of a ``run.json`` file (see :func:`read_run_info`)."""
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(where, f"not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise CorruptCheckpointError(where, "expected a JSON object")
    version = info.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptCheckpointError(where, f"missing or bad 'format' ({version!r})")
    if version > RUN_FORMAT:
        raise IncompatibleFormatError(
            f"{where}: run format {version} is newer than this highmark reads ({RUN_FORMAT}); "
            "upgrade highmark"
        )
    return info


def parse_history(data: bytes, where: str = HISTORY_FILE) -> list[dict[str, Any]]:
    """Decodes the bytes of a ``history.jsonl`` file (see :func:`read_history`).

    A line that is not a valid record (a line torn by a crash) is skipped with a warning, so a
    damaged history never hides the rest of a run.
    """
    records: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines):  # no newline after it: the write was cut short
            logger.warning("%s: skipping line %d, torn by an interrupted write", where, number)
            break
        try:
            record = json.loads(line.decode("utf-8"))
            _check_record(record)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            logger.warning("%s: skipping line %d, not a valid record (%s)", where, number, exc)
            continue
        records.append(record)
    return records


def _check_record(record: Any) -> None:
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    if not isinstance(record.get("step"), int) or not isinstance(record.get("metrics"), dict):
        raise ValueError("a record needs an integer 'step' and a 'metrics' object")


def _where(storage: Storage, rel: str) -> str:
    return f"{storage.url.rstrip('/')}/{rel}"


def metric_value(name: str, value: Any) -> float | None:
    """Converts a reported metric to what the history stores: a float (NaN/inf kept) or None.

    Raises:
        TypeError: the value is not a number (bool and str are refused), naming the metric.
    """
    if value is None:
        return None
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:  # e.g. a tensor with more than one element
        raise TypeError(f"metric {name!r} must be a single number, got {value!r}") from exc


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":"), sort_keys=False)


class HistoryWriter:
    """Writes ``history.jsonl`` (append-only, flushed per record) and ``run.json`` (atomic).

    On local disk neither is written through a symbolic link (the store's rule): a link at
    either name raises :class:`~highmark.errors.CorruptCheckpointError` naming it.

    Args:
        storage: the run directory's storage.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        storage.makedirs("")
        self._local = storage if isinstance(storage, LocalStorage) else None
        self._lines: list[str] | None = None  # full content, kept for object stores only
        self._tail_checked = False
        if self._local is None:
            self._lines = []
            if storage.exists(HISTORY_FILE):
                data = storage.read_bytes(HISTORY_FILE)
                where = _where(storage, HISTORY_FILE)
                self._lines = [_dumps(r) for r in parse_history(data, where=where)]

    def append(self, record: Mapping[str, Any]) -> None:
        """Appends one record (``step``, ``epoch``, ``time``, ``metrics``) and flushes it."""
        line = _dumps(dict(record))
        if self._local is not None:
            # in place, never through a link (CorruptCheckpointError names one)
            with self._local.open_append(HISTORY_FILE) as fh:
                if not self._tail_checked and not _ends_with_newline(fh):
                    fh.write(b"\n")  # a torn line from a crash: start a fresh line after it
                self._tail_checked = True
                fh.write(line.encode("utf-8") + b"\n")
                fh.flush()
        else:
            assert self._lines is not None
            self._lines.append(line)
            self._storage.replace_atomic(HISTORY_FILE, self._content(self._lines))

    def truncate(self, keep: int) -> None:
        """Keeps only the first ``keep`` records (the reports covered by a checkpoint)."""
        if not self._storage.exists(HISTORY_FILE):
            return
        data = self._storage.read_bytes(HISTORY_FILE)
        records = parse_history(data, where=_where(self._storage, HISTORY_FILE))
        lines = [_dumps(r) for r in records[: max(keep, 0)]]
        content = self._content(lines)
        if content != data:
            self._storage.replace_atomic(HISTORY_FILE, content)
        if self._lines is not None:
            self._lines = lines
        self._tail_checked = False

    def write_run_info(self, info: RunInfo | Mapping[str, Any]) -> None:
        """Replaces ``run.json`` atomically with ``info`` (``format`` is added when missing)."""
        payload = info.to_json() if isinstance(info, RunInfo) else {"format": RUN_FORMAT, **info}
        data = json.dumps(payload, allow_nan=True, indent=2, default=_json_default) + "\n"
        self._storage.replace_atomic(RUN_FILE, data.encode("utf-8"))

    @staticmethod
    def _content(lines: list[str]) -> bytes:
        return "".join(line + "\n" for line in lines).encode("utf-8")


def _ends_with_newline(fh: BinaryIO) -> bool:
    """Whether the file is empty or its last byte is a newline."""
    size = fh.seek(0, os.SEEK_END)
    return size == 0 or os.pread(fh.fileno(), 1, size - 1) == b"\n"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "__float__") and not isinstance(obj, (bool, str)):
        return float(obj)  # numpy / torch scalars
    raise TypeError(f"run.json: cannot write a {type(obj).__name__} ({obj!r})")
