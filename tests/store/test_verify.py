"""verify reports unexpected files."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from highmark.store.manager import CheckpointManager


def state(step: int) -> dict[str, Any]:
    return {"model": {"w": np.arange(64, dtype=np.float32) + step}, "step": step}


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
