"""The index highmark.json is checked like a checkpoint: a checksum verified before parsing, and a
damaged (or checksum-less) index is rebuilt from the checkpoints' verified manifests."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from highmark.errors import HighmarkError
from highmark.store.index import INDEX, load_index, read_index
from highmark.store.local import LocalStorage
from highmark.store.manager import CheckpointManager

FORMAT1_RUN = Path(__file__).with_name("data") / "run-format1"
LOSSES = {1: 0.5, 2: 0.25, 3: 0.375, 4: 0.125, 5: 0.625}


@dataclass
class Truth:
    """What a run holds, as saved: every checkpoint's metrics, the best step, the monitor."""

    metrics: dict[int, dict[str, float]]
    best: int | None
    monitor: dict[str, Any] | None


def seen(mgr: CheckpointManager) -> Truth:
    best = mgr.best
    monitor = mgr.monitor.config() if mgr.monitor is not None else None
    return Truth({c.step: c.metrics for c in mgr.checkpoints()}, best and best.step, monitor)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[Path, Truth]]:
    """A real run: five saves ranked by loss, retention deleting some (a retention log).

    In a memory-backed directory where there is one (/dev/shm), so that the thousands of opens
    below, each writing and fsyncing an index, take seconds, not minutes."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    with tempfile.TemporaryDirectory(dir=base, prefix="highmark-test-") as root:
        path = Path(root) / "run"
        yield path, _save_run(path)


def _save_run(path: Path) -> Truth:
    with CheckpointManager(path, monitor="loss", keep_best=2, keep_last=1) as mgr:
        for step, loss in LOSSES.items():
            mgr.save(step, {"w": torch.full((2,), float(step))}, {"loss": loss, "acc": step / 8})
        truth = seen(mgr)
    assert truth.best == 4
    assert sorted(truth.metrics) == [2, 4, 5]
    return truth


def flipped(data: bytes, position: int, pattern: int) -> bytes:
    out = bytearray(data)
    out[position] ^= pattern
    return bytes(out)


def test_an_index_is_written_with_a_checksum_that_verifies(run: tuple[Path, Truth]) -> None:
    path, _ = run
    data = (path / INDEX).read_bytes()
    assert data.endswith(b'"\n}\n')
    assert b'"checksum": "' in data[-40:]
    state, problem = read_index(LocalStorage(path))
    assert problem == ""
    assert state is not None
    assert state.checked


def test_index_entries_record_their_manifest_checksums(run: tuple[Path, Truth]) -> None:
    path, _ = run
    index = json.loads((path / INDEX).read_bytes())
    for entry in index["checkpoints"]:
        manifest = json.loads((path / entry["dir"] / "manifest.json").read_bytes())
        assert entry["manifest"] == manifest["checksum"]


def test_every_byte_flip_of_the_index_is_detected_or_harmless(
    run: tuple[Path, Truth], caplog: pytest.LogCaptureFixture
) -> None:
    """For every byte of a real index and several bit patterns: a read-only open, with the run's
    monitor and without one (like the CLI), shows exactly the saved metrics and best, or logs
    that it rebuilt the index (and then, without a monitor, ranks nothing) or raises a typed
    error. Never a changed number, never another best."""
    path, truth = run
    original = (path / INDEX).read_bytes()
    outcomes = {"same": 0, "rebuilt": 0, "error": 0}
    for position in range(len(original)):
        for pattern in (0x01, 0x20, 0xFF):
            (path / INDEX).write_bytes(flipped(original, position, pattern))
            for monitor in ("loss", None):
                caplog.clear()
                try:
                    with caplog.at_level(logging.INFO, logger="highmark"):
                        mgr = CheckpointManager(path, monitor=monitor, read_only=True)
                except HighmarkError:
                    outcomes["error"] += 1
                    continue
                got = seen(mgr)
                rebuilt = "rebuilt" in caplog.text
                where = f"byte {position} ^ {pattern:#x}, monitor {monitor}"
                assert got.metrics == truth.metrics, where
                if got.monitor is None and monitor is None:
                    assert rebuilt, where  # the damaged index's monitor is not trusted
                    assert got.best is None, where
                else:
                    assert got.monitor == truth.monitor, where
                    assert got.best == truth.best, where
                outcomes["rebuilt" if rebuilt else "same"] += 1
    assert outcomes["same"] == 0  # the checksum covers every byte
    assert outcomes["rebuilt"] > 0


def test_every_byte_flip_of_the_index_heals_at_a_writable_open(run: tuple[Path, Truth]) -> None:
    """A writable open of a run whose index has any one byte flipped writes back an index that
    verifies and holds the saved metrics and best; the checkpoints are untouched."""
    path, truth = run
    original = (path / INDEX).read_bytes()
    dirs = sorted(p.name for p in path.iterdir() if p.name.startswith("step-"))
    for position in range(len(original)):
        (path / INDEX).write_bytes(flipped(original, position, 0x10))
        with CheckpointManager(path, monitor="loss") as mgr:
            assert seen(mgr) == truth, position
        state = load_index(LocalStorage(path))
        assert state is not None, position
        assert state.checked, position
        assert {s: e.metrics for s, e in state.entries.items()} == truth.metrics, position
        assert state.best_step == truth.best, position
    assert sorted(p.name for p in path.iterdir() if p.name.startswith("step-")) == dirs


def test_a_damaged_index_is_rebuilt_in_memory_by_a_read_only_open(
    run: tuple[Path, Truth], caplog: pytest.LogCaptureFixture
) -> None:
    path, truth = run
    damaged = (path / INDEX).read_bytes().replace(b'"loss": 0.125', b'"loss": 0.625', 1)
    (path / INDEX).write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        mgr = CheckpointManager(path, monitor="loss", read_only=True)
    assert seen(mgr) == truth
    assert "fails its checksum" in caplog.text
    assert "rebuilt" in caplog.text
    assert (path / INDEX).read_bytes() == damaged  # read-only: nothing written


def test_a_damaged_index_loses_its_monitor_and_retention_log(run: tuple[Path, Truth]) -> None:
    path, truth = run
    data = (path / INDEX).read_bytes()
    (path / INDEX).write_bytes(data.replace(b'"min_delta": 0.0', b'"min_delta": 9.0'))
    assert load_index(LocalStorage(path)) is None
    with CheckpointManager(path) as mgr:  # no monitor given: the damaged one is not used
        assert mgr.monitor is None
        assert mgr.best is None
        assert {c.step: c.metrics for c in mgr.checkpoints()} == truth.metrics
    rewritten = json.loads((path / INDEX).read_bytes())
    assert rewritten["retention_log"] == []
    assert rewritten["monitor"] is None


def test_an_index_without_a_checksum_is_rebuilt_from_the_manifests(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An index written before indexes had a checksum (the format-1 fixture): its entries come
    from the manifests, its monitor is kept, and a writable open upgrades it."""
    path = tmp_path / "run"
    shutil.copytree(FORMAT1_RUN, path)
    legacy = json.loads((path / INDEX).read_bytes())
    assert "checksum" not in legacy
    with caplog.at_level(logging.INFO, logger="highmark"):
        mgr = CheckpointManager(path, read_only=True)
    assert "no checksum" in caplog.text
    assert mgr.monitor is not None
    assert mgr.monitor.config() == legacy["monitor"]
    assert {c.step: c.metrics for c in mgr.checkpoints()} == {2: {"loss": 0.25}, 3: {"loss": 0.75}}
    assert mgr.best is not None
    assert mgr.best.step == 2
    with CheckpointManager(path):
        pass
    state = load_index(LocalStorage(path))
    assert state is not None
    assert state.checked
    assert state.retention_log == legacy["retention_log"]


def test_a_legacy_index_with_edited_metrics_is_not_believed(tmp_path: Path) -> None:
    """Without a checksum nothing says the entries are right: they come from the manifests."""
    path = tmp_path / "run"
    shutil.copytree(FORMAT1_RUN, path)
    legacy = json.loads((path / INDEX).read_bytes())
    legacy["checkpoints"][1]["metrics"]["loss"] = 0.01  # step 3 would become the best
    legacy["ranking"]["best_step"] = 3
    (path / INDEX).write_text(json.dumps(legacy))
    mgr = CheckpointManager(path, read_only=True)
    assert mgr.info(3).metrics == {"loss": 0.75}
    assert mgr.best is not None
    assert mgr.best.step == 2


def test_the_index_checksum_is_checked_before_parsing(run: tuple[Path, Truth]) -> None:
    """A damaged index is not parsed at all: one that would fail to parse reports the checksum."""
    path, _ = run
    data = bytearray((path / INDEX).read_bytes())
    data[0:1] = b"["  # no longer JSON that parses
    (path / INDEX).write_bytes(bytes(data))
    state, problem = read_index(LocalStorage(path))
    assert state is None
    assert "checksum" in problem
