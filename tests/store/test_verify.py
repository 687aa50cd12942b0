"""verify reports real damage and unexpected files, and no false alarm while a writer works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from highmark.store import format as fmt
from highmark.store.index import INDEX
from highmark.store.manager import CheckpointManager
from highmark.store.verification import VerifyReport

CHILD = str(Path(__file__).with_name("writer_child.py"))
ROUNDS = 40
ELEMENTS = 500_000  # 2 MB a checkpoint: verifying one takes long enough to be overtaken


def state(step: int) -> dict[str, Any]:
    return {"model": {"w": np.arange(64, dtype=np.float32) + step}, "step": step}


def flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, 2)
        byte = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([byte[0] ^ 0xFF]))


# ------------------------------------------------------------ files the manifest does not name


@pytest.mark.parametrize("name", ["extra.safetensors", "notes.txt", "sub/inner.bin"])
def test_verify_reports_a_file_the_manifest_does_not_name(storage: Any, name: str) -> None:
    with CheckpointManager(storage, keep_best=0, keep_last=2) as mgr:
        mgr.save(1, state(1))
        assert mgr.verify().ok
        storage.write_bytes(f"step-00000001/{name}", b"stray")
        report = mgr.verify()
    assert len(report.damaged) == 1
    path, why = report.damaged[0]
    assert path.endswith(f"step-00000001/{name.split('/')[0]}")
    assert why.startswith("unexpected file")


# ------------------------------------------------------------------ a writer at work meanwhile


def test_a_checkpoint_the_writer_deletes_after_verify_started_is_removed_not_damaged(
    run_location: Any,
) -> None:
    with CheckpointManager(run_location.url, keep_best=0, keep_last=1, **run_location.kwargs) as w:
        w.save(1, state(1))
        reader = CheckpointManager(run_location.url, read_only=True, **run_location.kwargs)
        w.save(2, state(2))  # retention deletes step 1, which the reader still lists
        report = reader.verify()
    assert report.ok, report.damaged
    assert report.removed == [1]


def test_a_checkpoint_saved_again_while_it_is_verified_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    with CheckpointManager(run, keep_best=0, keep_last=2) as writer:
        writer.save(1, state(1))
        real = fmt.read_manifest
        resaved: list[int] = []

        def read_manifest_then_resave(storage: Any, ckpt_dir: str) -> dict[str, Any]:
            manifest = real(storage, ckpt_dir)
            if not resaved:  # orders the race: the files verify reads next are the new ones
                resaved.append(1)
                writer.save(1, state(7), force=True)
            return manifest

        monkeypatch.setattr(fmt, "read_manifest", read_manifest_then_resave)
        report = CheckpointManager(run, read_only=True).verify()
    assert resaved == [1]
    assert report.ok, report.damaged
    assert report.removed == []


def test_a_listed_checkpoint_whose_directory_vanished_is_damaged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with CheckpointManager(run, keep_best=0, keep_last=2) as writer:
        writer.save(1, state(1))
        reader = CheckpointManager(run, read_only=True)
        (run / "step-00000001" / "manifest.json").unlink()
        (run / "step-00000001" / "model.safetensors").unlink()
        (run / "step-00000001").rmdir()  # by hand: the index still lists it
        report = reader.verify()
    assert [why for _, why in report.damaged] == ["not committed"]


def test_damage_in_a_committed_checkpoint_the_index_misses_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with CheckpointManager(run, keep_best=0, keep_last=2) as writer:
        writer.save(1, state(1))
        index_before = (run / INDEX).read_bytes()
        writer.save(2, state(2))
    (run / INDEX).write_bytes(index_before)  # as a crash between commit and index write leaves
    flip_last_byte(run / "step-00000002" / "model.safetensors")
    report = CheckpointManager(run, read_only=True).verify()
    assert [p.rsplit("/", 2)[-2:] for p, _ in report.damaged] == [
        ["step-00000002", "model.safetensors"]
    ]


@pytest.fixture
def saving_writer(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A writer process saving in a loop (keep_last=1; step 0 stays as the best)."""
    child = subprocess.Popen(
        [sys.executable, CHILD, "loop", str(tmp_path / "run"), str(ELEMENTS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for _ in range(3):  # steps 0-2 committed: step 0 kept as the best, the latest churning
        child.stdout.readline()
    yield child
    child.kill()
    child.wait()
    child.stdout.close()


def verify_like_the_cli(run: Path) -> tuple[VerifyReport, list[VerifyReport]]:
    """A whole-run verify, and one per listed step as ``highmark verify`` does, on a fresh view."""
    with CheckpointManager(run, read_only=True) as mgr:
        steps = [c.step for c in mgr.checkpoints()]
        return mgr.verify(), [mgr.verify(step) for step in steps]


def test_verify_while_a_writer_saves_in_a_loop_reports_no_damage(
    tmp_path: Path, saving_writer: subprocess.Popen[str]
) -> None:
    false_reports = []
    for _ in range(ROUNDS):
        whole, per_step = verify_like_the_cli(tmp_path / "run")
        false_reports += [d for r in (whole, *per_step) for d in r.damaged]
    assert false_reports == []


def test_verify_while_a_writer_saves_in_a_loop_still_reports_real_damage(
    tmp_path: Path, saving_writer: subprocess.Popen[str]
) -> None:
    flip_last_byte(tmp_path / "run" / "step-00000000" / "model.safetensors")  # kept as the best
    for _ in range(ROUNDS // 4):
        whole, per_step = verify_like_the_cli(tmp_path / "run")
        for report in (whole, per_step[0]):
            assert [(p.rsplit("/", 2)[-2:], why) for p, why in report.damaged] == [
                (["step-00000000", "model.safetensors"], "checksum mismatch in tensor 'model.w'")
            ]
        assert all(r.ok for r in per_step[1:])
