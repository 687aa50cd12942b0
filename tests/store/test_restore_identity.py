"""A checkpoint is what its directory name and its run say it is, or it is refused.

A manifest records its step and the id of the run that wrote it (``highmark.json`` holds the
run's id); a copy of a checkpoint under another step's name, or from another run, is refused
with CorruptCheckpointError naming the directory, and fallback skips it. Checkpoints written
before run ids existed (format fixtures) still load.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError
from highmark.state.tree import flatten
from highmark.store import format as fmt
from highmark.store.checks import canonical, hex64
from highmark.store.index import INDEX
from highmark.store.manager import CheckpointManager
from highmark.store.objectstore import MemoryStorage

DATA = Path(__file__).parent / "data"


def state(step: int) -> dict[str, Any]:
    return {"model": {"w": torch.full((4,), float(step))}, "step": step}


def saved_run(path: Path, steps: list[int], **kwargs: Any) -> Path:
    with CheckpointManager(path, keep_last=10, **kwargs) as mgr:
        for step in steps:
            mgr.save(step, state(step))
    return path


def run_id(path: Path) -> str:
    return str(json.loads((path / INDEX).read_text())["run"])


def manifest(path: Path, step: int) -> dict[str, Any]:
    return dict(json.loads((path / f"step-{step:08d}" / "manifest.json").read_text()))


def test_a_new_run_gets_an_id_that_every_manifest_records(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    ident = run_id(run)
    assert len(ident) == 32
    assert int(ident, 16) >= 0
    assert [manifest(run, s)["run"] for s in (1, 2)] == [ident, ident]
    assert run_id(saved_run(tmp_path / "other", [1])) != ident


def test_the_run_id_survives_reopening(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1])
    ident = run_id(run)
    saved_run(run, [2])
    assert run_id(run) == ident
    assert manifest(run, 2)["run"] == ident


def test_an_older_step_copied_under_a_newer_name_is_refused_naming_the_dir(
    tmp_path: Path,
) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    shutil.copytree(run / "step-00000001", run / "step-00000003")
    with CheckpointManager(run) as mgr:
        assert mgr.latest is not None
        assert mgr.latest.step == 3
        with pytest.raises(CorruptCheckpointError, match=r"step-00000003.*step 1"):
            mgr.restore("latest")


def test_fallback_skips_a_copy_under_another_name_for_the_newest_genuine_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    shutil.copytree(run / "step-00000001", run / "step-00000003")
    with CheckpointManager(run) as mgr, caplog.at_level(logging.WARNING, logger="highmark"):
        back = mgr.restore("latest", fallback=True)
    assert back["step"] == 2
    assert "step-00000003" in caplog.text


def test_a_checkpoint_of_another_run_is_refused_naming_the_dir(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    other = saved_run(tmp_path / "other", [3])
    shutil.copytree(other / "step-00000003", run / "step-00000003")
    with CheckpointManager(run) as mgr:
        with pytest.raises(CorruptCheckpointError, match=r"step-00000003.*another run"):
            mgr.restore(3)
        assert mgr.restore("latest", fallback=True)["step"] == 2


def test_a_rebuilt_index_keeps_the_run_id_its_checkpoints_record(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    ident = run_id(run)
    (run / INDEX).unlink()
    with CheckpointManager(run) as mgr:
        assert mgr.restore("latest")["step"] == 2
    assert run_id(run) == ident


@pytest.mark.parametrize("fixture", ["format1", "format2", "run-format1"])
def test_checkpoints_written_without_a_run_id_still_load(tmp_path: Path, fixture: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(DATA / fixture, run)
    with CheckpointManager(run, read_only=True) as mgr:
        assert mgr.restore(3) is not None
    with CheckpointManager(run, keep_last=5) as mgr:  # the run gets an id; old checkpoints load
        assert mgr.restore(3) is not None
        mgr.save(4, state(4))
    assert manifest(run, 4)["run"] == run_id(run)
    assert "run" not in manifest(run, 3)


@pytest.mark.parametrize("bad", ["", "../other", "x" * 65, 7, None])
def test_a_manifest_with_an_invalid_run_id_is_refused(tmp_path: Path, bad: Any) -> None:
    run = saved_run(tmp_path / "run", [1])
    path = run / "step-00000001" / "manifest.json"
    data = json.loads(path.read_text())
    data["run"] = bad
    data["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(data)))  # a consistent forgery
    path.write_text(json.dumps(data))
    with CheckpointManager(run) as mgr, pytest.raises(CorruptCheckpointError, match="run id"):
        mgr.restore(1)


def test_writing_a_checkpoint_with_an_invalid_run_id_is_refused_before_writing() -> None:
    storage = MemoryStorage()
    with pytest.raises(ConfigError, match="run id"):
        fmt.write_checkpoint(
            storage, "c", flatten(state(1)), step=1, metrics={}, metadata={}, created=0.0,
            run="no/slashes",
        )  # fmt: skip
    assert not storage.exists("c/manifest.json")
