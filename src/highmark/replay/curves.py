"""Recorded learning curves read from the files people have: highmark runs, CSV, Keras, Lightning.

Every reader gives a :class:`Curve`: evaluations in step order, each a mapping of metric name to
value (``None`` where the metric was not recorded at that step). Paths may be local or fsspec URLs.

* a highmark run directory (it holds ``history.jsonl``), read with :mod:`highmark.store.runfiles`;
* a directory without one: every run and curve file directly inside it;
* ``*.csv``: a ``step`` (else ``epoch``) column and metric columns; without either, the row number.
  Lightning's ``metrics.csv`` (both ``epoch`` and ``step`` columns, sparse rows) is merged by epoch:
  the last non-empty value of each column in an epoch wins;
* ``*.json``: a Keras ``History.history`` dict (``{"loss": [...], "val_loss": [...]}``, index =
  epoch), optionally under a ``"history"`` key, or a list of records;
* ``*.jsonl``: one record per line, either highmark's ``{"step", "metrics"}`` or flat.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from highmark.errors import ConfigError

__all__ = ["Curve", "load_curve", "load_curves"]

HISTORY = "history.jsonl"
_SUFFIXES = (".csv", ".json", ".jsonl")


@dataclass
class Curve:
    """One recorded learning curve: steps in increasing order, one metrics row per step."""

    name: str
    steps: list[int]
    rows: list[dict[str, float | None]]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def cut_short(self) -> bool:
        """Whether its run's own early stopping ended it (``run.json`` status ``stopped``)."""
        return self.info.get("status") == "stopped"

    @property
    def metric_names(self) -> list[str]:
        """Every metric that has at least one value, in first-seen order."""
        names: dict[str, None] = {}
        for row in self.rows:
            for k, v in row.items():
                if v is not None:
                    names.setdefault(k, None)
        return list(names)

    def points(self, key: str) -> list[tuple[int, dict[str, float | None]]]:
        """The evaluations where ``key`` was recorded (NaN counts as recorded), as (step, row)."""
        return [
            (s, r) for s, r in zip(self.steps, self.rows, strict=True) if r.get(key) is not None
        ]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """The steps and values of one metric, where it was recorded."""
        pts = self.points(key)
        return [s for s, _ in pts], [float(r[key]) for _, r in pts]  # type: ignore[arg-type]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _merge(keyed: Iterable[tuple[int, Mapping[str, Any]]], name: str, source: str) -> Curve:
    """Merges rows sharing a step (later non-empty values win) and sorts them by step."""
    merged: dict[int, dict[str, float | None]] = {}
    for step, row in keyed:
        target = merged.setdefault(step, {})
        for k, v in row.items():
            number = _number(v)
            if number is not None or k not in target:
                target[k] = number
    steps = sorted(merged)
    return Curve(name=name, steps=steps, rows=[merged[s] for s in steps], source=source)


def _step_of(value: Any, where: str) -> int:
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{where}: step/epoch value {value!r} is not an integer")
    return int(number)


def curve_from_csv(text: str, name: str) -> Curve:
    """A curve from CSV text (plain, or Lightning's sparse ``metrics.csv``)."""
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    rows = list(reader)
    if not columns:
        raise ConfigError(f"{name}: empty CSV (no header)")
    sparse = any(not (r.get(c) or "").strip() for r in rows for c in columns)
    if "epoch" in columns and "step" in columns and sparse:
        key = "epoch"  # Lightning: train/val rows logged separately; merge them per epoch
    elif "step" in columns:
        key = "step"
    elif "epoch" in columns:
        key = "epoch"
    else:
        key = ""
    drop = {"step", "epoch"}
    keyed = [
        (
            _step_of(r[key], f"{name} row {i + 2}") if key else i,
            {c: r.get(c) for c in columns if c not in drop and c is not None},
        )
        for i, r in enumerate(rows)
        if not key or (r.get(key) or "").strip()
    ]
    curve = _merge(keyed, name, name)
    numeric = set(curve.metric_names)
    for row in curve.rows:
        for col in [c for c in row if c not in numeric]:
            del row[col]
    return curve


def curve_from_json(data: Any, name: str) -> Curve:
    """A curve from a Keras ``History.history`` dict (or ``{"history": {...}}``, or records)."""
    if isinstance(data, Mapping) and isinstance(data.get("history"), Mapping):
        data = data["history"]
    if isinstance(data, Mapping):
        series = {k: v for k, v in data.items() if isinstance(v, list)}
        if not series:
            raise ConfigError(f"{name}: a Keras history maps metric names to lists of values")
        length = max(len(v) for v in series.values())
        return _merge(
            (
                (i, {k: v[i] if i < len(v) else None for k, v in series.items()})
                for i in range(length)
            ),
            name,
            name,
        )
    if isinstance(data, list):
        return curve_from_records(data, name)
    raise ConfigError(f"{name}: expected a Keras history dict or a list of records")


def curve_from_records(records: Sequence[Any], name: str) -> Curve:
    """A curve from records: highmark's ``{"step", "metrics": {...}}`` or flat dicts."""
    keyed: list[tuple[int, Mapping[str, Any]]] = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ConfigError(f"{name}: record {i} is not an object")
        if isinstance(record.get("metrics"), Mapping):
            step = record.get("step", i)
            keyed.append((_step_of(step, f"{name} record {i}"), record["metrics"]))
        else:
            step = record.get("step", record.get("epoch", i))
            flat = {k: v for k, v in record.items() if k not in ("step", "epoch", "time")}
            keyed.append((_step_of(step, f"{name} record {i}"), flat))
    return _merge(keyed, name, name)


def _run_curve(url: str, storage_options: Mapping[str, Any] | None) -> Curve:
    from highmark.store.runfiles import read_history, read_run_info

    records = read_history(url, storage_options=dict(storage_options or {}))
    curve = curve_from_records(records, url)
    curve.name = posixpath.basename(url.rstrip("/")) or url
    curve.info = dict(read_run_info(url, storage_options=dict(storage_options or {})) or {})
    return curve


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return fs, path


def load_curve(url: str, storage_options: Mapping[str, Any] | None = None) -> list[Curve]:
    """The curves at one path or URL (one, or several for a directory of runs)."""
    fs, path = _fs(url, storage_options)
    if fs.isdir(path):
        if fs.exists(posixpath.join(path, HISTORY)):
            return [_run_curve(url, storage_options)]
        found: list[Curve] = []
        for child in sorted(fs.ls(path, detail=False)):
            child_url = url.rstrip("/") + "/" + posixpath.basename(str(child).rstrip("/"))
            if fs.isdir(child) and fs.exists(posixpath.join(child, HISTORY)):
                found.append(_run_curve(child_url, storage_options))
            elif str(child).endswith(_SUFFIXES):
                found.extend(load_curve(child_url, storage_options))
        if not found:
            raise ConfigError(f"{url}: no highmark run ({HISTORY}) or curve file in this directory")
        return found
    if not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such file or directory")
    text = fs.cat_file(path).decode("utf-8")
    if path.endswith(".csv"):
        return [curve_from_csv(text, url)]
    if path.endswith(".jsonl"):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [curve_from_records(records, url)]
    if path.endswith(".json"):
        return [curve_from_json(json.loads(text), url)]
    raise ConfigError(
        f"{url}: unknown curve format (expected a run directory, .csv, .json, .jsonl)"
    )


def load_curves(
    urls: Sequence[str], storage_options: Mapping[str, Any] | None = None
) -> list[Curve]:
    """The curves of every path or URL, in the given order; duplicate names get their path."""
    curves = [c for url in urls for c in load_curve(url, storage_options)]
    names = [c.name for c in curves]
    for c in curves:
        if names.count(c.name) > 1 and c.source:
            c.name = c.source
    return curves
