"""A run written in index/checkpoint format 1 (kept under data/) stays readable."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

from highmark.store.manager import CheckpointManager

RUN = Path(__file__).with_name("data") / "run-format1"


def test_format1_run_restores_best_and_latest_read_only() -> None:
    mgr = CheckpointManager(RUN, monitor="loss", read_only=True)
    assert [c.step for c in mgr.checkpoints()] == [2, 3]
    assert mgr.best is not None
    assert mgr.best.step == 2
    best = mgr.restore("best")
    assert torch.equal(best["model"]["w"], torch.arange(4, dtype=torch.float32) * 2)
    assert best["model"]["h"].dtype == torch.bfloat16
    assert np.array_equal(best["np"], np.arange(3, dtype=np.int16) + 2)
    tag = best["meta"]["tag"]
    assert tag[:2] == ("a", None)
    assert math.isnan(tag[2])
    assert mgr.restore("latest")["meta"]["epoch"] == 3
    assert mgr.verify().ok


def test_format1_run_accepts_new_saves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    with CheckpointManager(run, monitor="loss", keep_best=1, keep_last=1) as mgr:
        mgr.save(4, {"w": torch.zeros(2)}, {"loss": 0.9})
        assert [c.step for c in mgr.checkpoints()] == [2, 4]
        assert mgr.best is not None
        assert mgr.best.step == 2
