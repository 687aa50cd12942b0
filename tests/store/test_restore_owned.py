"""Restored tensors own their memory: later changes to the checkpoint's files never reach them.

``zero_copy=True`` is the opt-in exception: tensors over the memory-mapped file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from highmark.store.manager import CheckpointManager


def state() -> dict[str, Any]:
    return {
        "model": {"w": torch.arange(50_000, dtype=torch.float32), "b": torch.ones(3)},
        "opt": {"m": np.arange(20_000, dtype=np.float64)},
    }


def mapped_files() -> str:
    return Path("/proc/self/maps").read_text()


def test_overwriting_a_file_in_place_leaves_restored_tensors_unchanged(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        back = mgr.restore()
    for name in ("model", "opt"):
        path = tmp_path / "run" / "step-00000001" / f"{name}.safetensors"
        size = path.stat().st_size
        with path.open("r+b") as f:  # in place: the same inode, every byte changed
            f.write(b"\xa5" * size)
    assert torch.equal(back["model"]["w"], state()["model"]["w"])
    assert torch.equal(back["model"]["b"], state()["model"]["b"])
    assert np.array_equal(back["opt"]["m"], state()["opt"]["m"])


def test_restored_tensors_map_no_checkpoint_file(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        back = mgr.restore()
        assert "step-00000001" not in mapped_files()
    assert back["model"]["w"].sum() > 0


CHILD = """
import os, sys, numpy as np, torch
from highmark.store.manager import CheckpointManager
run = sys.argv[1]
w = torch.arange(50_000.0, dtype=torch.float64)
with CheckpointManager(run) as mgr:
    mgr.save(1, {"model": {"w": w}, "opt": {"m": np.arange(20_000.0)}})
    back = mgr.restore(zero_copy=sys.argv[2] == "zero_copy")
for name in ("model", "opt"):
    os.truncate(os.path.join(run, "step-00000001", name + ".safetensors"), 0)
print("sums", float(back["model"]["w"].sum()), float(back["opt"]["m"].sum()), flush=True)
"""


def run_child(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "run"), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_truncating_the_files_after_a_restore_neither_kills_nor_changes_it(
    tmp_path: Path,
) -> None:
    out = run_child(tmp_path, "owned")
    assert out.returncode == 0, out.stderr
    assert f"sums {sum(range(50_000))}.0 {sum(range(20_000))}.0" in out.stdout


def test_zero_copy_tensors_are_views_of_the_mapped_file(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        back = mgr.restore(zero_copy=True)
        assert "step-00000001/model.safetensors" in mapped_files()
    assert torch.equal(back["model"]["w"], state()["model"]["w"])
    back["model"]["w"].add_(1)  # copy-on-write: the file keeps its bytes
    with CheckpointManager(tmp_path / "run", read_only=True) as mgr:
        assert torch.equal(mgr.restore()["model"]["w"], state()["model"]["w"])


def test_zero_copy_tensors_die_with_the_file_truncated_under_them(tmp_path: Path) -> None:
    # The documented risk of the opt-in mode, shown in a child process: SIGBUS.
    out = run_child(tmp_path, "zero_copy")
    assert out.returncode == -7, (out.returncode, out.stderr[-2000:])
