"""ManifestCache: a manager reuses the manifests it wrote or read while their file is unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from highmark.errors import CorruptCheckpointError
from highmark.store import manifests
from highmark.store.manager import CheckpointManager

STATE = {"model": {"w": torch.arange(6.0).reshape(2, 3)}}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the manifests read from storage (a spy: the real read still runs)."""
    seen: list[str] = []
    real = manifests.fmt.read_manifest

    def counting(storage: Any, ckpt_dir: str) -> dict[str, Any]:
        seen.append(ckpt_dir)
        return real(storage, ckpt_dir)

    monkeypatch.setattr(manifests.fmt, "read_manifest", counting)
    return seen


def manifest_path(mgr: CheckpointManager, step: int) -> Path:
    return Path(mgr.storage.local_path(f"step-{step:08d}/manifest.json") or "")


def test_restoring_a_checkpoint_this_manager_wrote_reads_no_manifest(tmp_path, reads) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, STATE)
        for _ in range(3):
            assert torch.equal(mgr.restore(1)["model"]["w"], STATE["model"]["w"])
    assert reads == []


def test_a_manifest_read_once_is_reused(tmp_path, reads) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, STATE)
    with CheckpointManager(tmp_path / "run", read_only=True) as mgr:
        mgr.restore(1)
        mgr.restore(1)
    assert reads == ["step-00000001"]


def test_a_manifest_changed_on_disk_is_read_again_and_its_damage_found(tmp_path) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, STATE)
        path = manifest_path(mgr, 1)
        text = path.read_text()
        # Edited in place (same inode); a new size, so the change is seen whatever the clock.
        path.write_text(text.replace('"step": 1', '"step": 17'))
        with pytest.raises(CorruptCheckpointError, match="manifest checksum mismatch"):
            mgr.restore(1)


def test_a_deleted_manifest_is_reported_missing(tmp_path) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, STATE)
        os.unlink(manifest_path(mgr, 1))
        with pytest.raises(CorruptCheckpointError, match=r"manifest\.json is missing"):
            mgr.restore(1)
