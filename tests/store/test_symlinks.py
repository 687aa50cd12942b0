"""Nothing outside a local run is ever written: a link inside the run is never followed.

Each test plants a symbolic link (to a file or directory outside the run) where highmark writes,
renames or deletes, drives the real code path, and checks that what the link points to is
unchanged and that a write was refused with a CorruptCheckpointError naming the link. The run
directory itself may be a link; that keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from highmark.errors import CorruptCheckpointError
from highmark.policy.retention import KeepLast, Retention
from highmark.store.index import INDEX
from highmark.store.local import LocalStorage
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import HISTORY_FILE, RUN_FILE, HistoryWriter, read_history
from highmark.store.storage import LOCK_NAME

PRECIOUS = b"precious bytes outside the run\n"


def state(step: int) -> dict[str, Any]:
    return {"model": {"w": np.arange(8, dtype=np.float32) + step}, "step": step}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the run: a file, and a directory holding a checkpoint-like file."""
    root = tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    (root / "file.txt").write_bytes(PRECIOUS)
    (root / "dir" / "model.safetensors").write_bytes(PRECIOUS)
    return root


@pytest.fixture
def run(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def saved_run(run: Path, steps: list[int]) -> None:
    with CheckpointManager(run, keep_best=0, keep_last=10) as mgr:
        for step in steps:
            mgr.save(step, state(step))


def plant(link: Path, target: Path) -> None:
    if link.is_dir() and not link.is_symlink():
        os.rename(link, link.with_name(f"{link.name}.moved"))
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def leftovers(run: Path) -> list[str]:
    return [n for n in os.listdir(run) if n.startswith((".tmp-", ".old-"))]


def refused(path: Path, action: Callable[[], object]) -> None:
    with pytest.raises(CorruptCheckpointError, match="symbolic link") as info:
        action()
    assert info.value.path == str(path)


# ------------------------------------------------------------------ files at the run root


def test_a_lock_file_linked_outside_is_refused(run: Path, outside: Path) -> None:
    before = snapshot(outside)
    plant(run / LOCK_NAME, outside / "file.txt")
    refused(run / LOCK_NAME, lambda: CheckpointManager(run))
    assert snapshot(outside) == before


def test_an_index_linked_outside_is_refused(run: Path, outside: Path) -> None:
    saved_run(run, [1])
    before = snapshot(outside)
    plant(run / INDEX, outside / "file.txt")
    refused(run / INDEX, lambda: CheckpointManager(run))  # rebuilding the index writes it
    assert snapshot(outside) == before


def test_run_info_linked_outside_is_refused(run: Path, outside: Path) -> None:
    before = snapshot(outside)
    plant(run / RUN_FILE, outside / "file.txt")
    writer = HistoryWriter(LocalStorage(run))
    refused(run / RUN_FILE, lambda: writer.write_run_info({"status": "running"}))
    assert snapshot(outside) == before


def test_history_linked_outside_is_refused_on_append(run: Path, outside: Path) -> None:
    before = snapshot(outside)
    plant(run / HISTORY_FILE, outside / "file.txt")
    writer = HistoryWriter(LocalStorage(run))
    refused(run / HISTORY_FILE, lambda: writer.append({"step": 1, "metrics": {"loss": 1.0}}))
    assert snapshot(outside) == before


def test_history_linked_outside_is_refused_on_truncate(run: Path, outside: Path) -> None:
    (outside / "history.jsonl").write_bytes(b'{"step": 1, "metrics": {}}\n' * 3)
    before = snapshot(outside)
    plant(run / HISTORY_FILE, outside / "history.jsonl")
    writer = HistoryWriter(LocalStorage(run))
    refused(run / HISTORY_FILE, lambda: writer.truncate(1))
    assert snapshot(outside) == before


def test_history_with_another_hard_link_is_refused_on_append(run: Path, outside: Path) -> None:
    os.link(outside / "file.txt", run / HISTORY_FILE)
    writer = HistoryWriter(LocalStorage(run))
    with pytest.raises(CorruptCheckpointError, match="hard link") as info:
        writer.append({"step": 1, "metrics": {"loss": 1.0}})
    assert info.value.path == str(run / HISTORY_FILE)
    assert (outside / "file.txt").read_bytes() == PRECIOUS


def test_a_lock_file_with_another_hard_link_is_refused(run: Path, outside: Path) -> None:
    os.link(outside / "file.txt", run / LOCK_NAME)
    with pytest.raises(CorruptCheckpointError, match="hard link"):
        CheckpointManager(run)
    assert (outside / "file.txt").read_bytes() == PRECIOUS


def test_a_checkpoint_file_with_another_hard_link_is_written_anew(run: Path, outside: Path) -> None:
    storage = LocalStorage(run)
    storage.makedirs("stage")
    os.link(outside / "file.txt", run / "stage" / "model.safetensors")
    storage.write_bytes("stage/model.safetensors", b"new")
    assert (run / "stage" / "model.safetensors").read_bytes() == b"new"
    assert (outside / "file.txt").read_bytes() == PRECIOUS


# ------------------------------------------------------------------ step and staging dirs


def test_writing_into_a_step_dir_linked_outside_is_refused(run: Path, outside: Path) -> None:
    saved_run(run, [1])
    before = snapshot(outside)
    plant(run / "step-00000001", outside / "dir")
    storage = LocalStorage(run)
    refused(run / "step-00000001", lambda: storage.write_bytes("step-00000001/x.bin", b"x"))
    refused(run / "step-00000001", lambda: storage.replace_atomic("step-00000001/x.json", b"x"))
    refused(run / "step-00000001", lambda: storage.makedirs("step-00000001/sub"))
    refused(run / "step-00000001", lambda: storage.remove("step-00000001/model.safetensors"))
    refused(run / "step-00000001", lambda: storage.remove_tree("step-00000001/sub"))
    assert snapshot(outside) == before


def test_writing_into_a_staging_dir_linked_outside_is_refused(run: Path, outside: Path) -> None:
    before = snapshot(outside)
    storage = LocalStorage(run)
    staging = storage.staging_dir("step-00000001")
    plant(run / staging, outside / "dir")

    def write() -> None:
        with storage.open_write(f"{staging}/model.safetensors") as f:
            f.write(b"x")

    refused(run / staging, write)
    refused(run / staging, lambda: storage.commit_dir(staging, "step-00000001"))
    assert not (run / "step-00000001").exists()
    assert snapshot(outside) == before


def test_a_checkpoint_file_linked_outside_is_refused(run: Path, outside: Path) -> None:
    before = snapshot(outside)
    storage = LocalStorage(run)
    staging = storage.staging_dir("step-00000001")
    storage.makedirs(staging)
    plant(run / staging / "model.safetensors", outside / "file.txt")
    refused(
        run / staging / "model.safetensors",
        lambda: storage.write_bytes(f"{staging}/model.safetensors", b"x"),
    )
    refused(run / staging / "model.safetensors", lambda: storage.commit_dir(staging, "step-1"))
    assert snapshot(outside) == before


def test_retention_deletes_a_linked_step_dir_and_not_what_it_points_to(
    run: Path, outside: Path
) -> None:
    saved_run(run, [1])
    plant(run / "step-00000001", outside / "dir")
    before = snapshot(outside)
    with CheckpointManager(run, keep_best=0, keep_last=1) as mgr:
        mgr.save(2, state(2))  # retention deletes step 1
        assert [c.step for c in mgr.checkpoints()] == [2]
    assert not (run / "step-00000001").is_symlink()
    assert leftovers(run) == []  # the link itself is gone
    assert snapshot(outside) == before


def test_prune_deletes_a_linked_step_dir_and_not_what_it_points_to(
    run: Path, outside: Path
) -> None:
    saved_run(run, [1, 2])
    plant(run / "step-00000001", outside / "dir")
    before = snapshot(outside)
    with CheckpointManager(run, keep_best=0, keep_last=10) as mgr:
        mgr.prune(Retention([KeepLast(1)]))
    assert not (run / "step-00000001").is_symlink()
    assert leftovers(run) == []  # the link itself is gone
    assert snapshot(outside) == before


def test_a_forced_save_over_a_linked_step_dir_leaves_what_it_points_to(
    run: Path, outside: Path
) -> None:
    saved_run(run, [1])
    plant(run / "step-00000001", outside / "dir")
    before = snapshot(outside)
    with CheckpointManager(run, keep_best=0, keep_last=10) as mgr:
        mgr.save(1, state(5), force=True)
        assert mgr.verify().ok
    assert not (run / "step-00000001").is_symlink()
    assert leftovers(run) == []  # the link moved aside is gone
    assert snapshot(outside) == before


# ------------------------------------------------------------------ leftovers at the next open


@pytest.mark.parametrize(
    ("name", "target"),
    [
        (".tmp-step-00000001-0123abcd", "dir"),
        (".tmp-highmark.json-0123abcd", "file.txt"),
        (".tmp-del-step-00000001-0123abcd", "dir"),
        (".old-step-00000001-0123abcd", "dir"),
        (".old-step-00000009-0123abcd", "dir"),  # no step-00000009: not put back either
    ],
)
def test_a_leftover_name_linked_outside_is_removed_and_not_followed(
    run: Path, outside: Path, name: str, target: str
) -> None:
    saved_run(run, [1])
    before = snapshot(outside)
    (run / name).symlink_to(outside / target)
    with CheckpointManager(run, keep_best=0, keep_last=10) as mgr:  # the open cleans leftovers
        assert [c.step for c in mgr.checkpoints()] == [1]
    assert sorted(os.listdir(run)) == sorted([LOCK_NAME, INDEX, "step-00000001"])
    assert snapshot(outside) == before


# ------------------------------------------------------------------ the run root may be a link


def test_a_run_directory_reached_through_a_link_works(tmp_path: Path) -> None:
    (tmp_path / "data" / "runs").mkdir(parents=True)
    (tmp_path / "runs").symlink_to(tmp_path / "data" / "runs")
    run = tmp_path / "runs" / "a"
    with CheckpointManager(run, keep_best=0, keep_last=1) as mgr:
        for step in (1, 2, 3):
            mgr.save(step, state(step))
        mgr.save(3, state(4), force=True)
        assert mgr.verify().ok
        assert np.array_equal(mgr.restore()["model"]["w"], state(4)["model"]["w"])
    writer = HistoryWriter(LocalStorage(run))
    writer.append({"step": 3, "metrics": {"loss": 0.5}})
    writer.write_run_info({"status": "stopped"})
    assert read_history(run)[0]["step"] == 3
    real = tmp_path / "data" / "runs" / "a"
    assert sorted(os.listdir(real)) == sorted(
        [LOCK_NAME, HISTORY_FILE, INDEX, RUN_FILE, "step-00000003"]
    )


def test_a_run_directory_that_is_itself_a_link_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "real")
    with CheckpointManager(tmp_path / "run", keep_best=0, keep_last=1) as mgr:
        mgr.save(1, state(1))
        mgr.save(2, state(2))
    with CheckpointManager(tmp_path / "run", keep_best=0, keep_last=1) as mgr:
        assert [c.step for c in mgr.checkpoints()] == [2]
        assert mgr.verify().ok
    assert "step-00000002" in os.listdir(tmp_path / "real")
