"""The writer lock holds when its file is deleted or replaced under a live writer process."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from highmark.errors import LockedError
from highmark.store.manager import CheckpointManager
from highmark.store.objectstore import MemoryStorage
from highmark.store.storage import LOCK_NAME

CHILD = str(Path(__file__).with_name("writer_child.py"))


class Writer:
    """A writer process (``writer_child.py serve``) that saves when told to."""

    def __init__(self, run: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, "serve", str(run)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def save(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("save\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "run")
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
        w.proc.wait()


def test_a_second_writer_is_refused_after_the_held_lock_file_is_deleted(
    tmp_path: Path, writer: Writer
) -> None:
    (tmp_path / "run" / LOCK_NAME).unlink()
    with pytest.raises(LockedError):
        CheckpointManager(tmp_path / "run")


def test_a_second_writer_is_refused_after_the_held_lock_file_is_replaced(
    tmp_path: Path, writer: Writer
) -> None:
    fresh = tmp_path / "fresh"
    fresh.write_text("")
    os.replace(fresh, tmp_path / "run" / LOCK_NAME)
    with pytest.raises(LockedError):
        CheckpointManager(tmp_path / "run")


def test_the_writer_saves_on_and_recreates_a_deleted_lock_file(
    tmp_path: Path, writer: Writer
) -> None:
    (tmp_path / "run" / LOCK_NAME).unlink()
    assert writer.save() == "saved 1"
    record = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert record["pid"] == writer.proc.pid
    with pytest.raises(LockedError, match=f"pid {writer.proc.pid}"):  # named again
        CheckpointManager(tmp_path / "run")
    assert writer.close() == 0
    with CheckpointManager(tmp_path / "run") as mgr:
        assert [c.step for c in mgr.checkpoints()] == [0, 1]
        assert mgr.verify().ok


def test_the_same_run_reached_through_a_link_is_locked_too(tmp_path: Path, writer: Writer) -> None:
    (tmp_path / "alias").symlink_to(tmp_path / "run")
    with pytest.raises(LockedError):
        CheckpointManager(tmp_path / "alias")


def test_an_object_store_writer_whose_lock_was_taken_over_refuses_to_go_on() -> None:
    storage = MemoryStorage()
    first = CheckpointManager(storage, keep_best=0, keep_last=5)
    first.save(1, {"w": [1.0]})
    storage.remove(LOCK_NAME)  # an object store has no lock primitive: a second writer gets in
    second = CheckpointManager(storage, keep_best=0, keep_last=5)
    try:
        with pytest.raises(LockedError, match="taken over"):
            first.save(2, {"w": [2.0]})
    finally:
        first.close()
        second.close()


def test_an_object_store_writer_rewrites_its_deleted_lock_at_the_next_save() -> None:
    storage = MemoryStorage()
    with CheckpointManager(storage, keep_best=0, keep_last=5) as mgr:
        mgr.save(1, {"w": [1.0]})
        storage.remove(LOCK_NAME)
        mgr.save(2, {"w": [2.0]})
        assert json.loads(storage.read_bytes(LOCK_NAME))["pid"] == os.getpid()
        with pytest.raises(LockedError):
            CheckpointManager(storage)


def test_without_a_directory_lock_a_writer_whose_lock_file_was_deleted_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mock, for a fault this machine cannot cause: a filesystem that cannot flock a directory
    # (some network filesystems); the file lock, the saves and the deletion are real.
    import fcntl
    import stat

    real = fcntl.flock

    def flock(fd: int, operation: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOLCK, "no locks available")
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with CheckpointManager(tmp_path / "run", keep_best=0, keep_last=5) as mgr:
        mgr.save(1, {"w": [1.0]})
        (tmp_path / "run" / LOCK_NAME).unlink()
        with pytest.raises(LockedError, match="deleted or replaced"):
            mgr.save(2, {"w": [2.0]})
