"""CheckpointManager(mode="auto"): a monitor name ranks checkpoints in the direction it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from highmark.errors import ConfigError
from highmark.store.manager import CheckpointManager


def test_an_accuracy_name_keeps_the_highest_by_default(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "r", monitor="val_acc", keep_best=1, keep_last=1) as ckpt:
        for step, acc in enumerate([0.5, 0.9, 0.7, 0.6]):
            ckpt.save(step, {"w": np.zeros(2)}, metrics={"val_acc": acc})
        assert ckpt.monitor.mode == "max"
        assert ckpt.best is not None
        assert ckpt.best.step == 1
        assert [c.step for c in ckpt.checkpoints()] == [1, 3]


def test_a_name_that_says_no_direction_asks_for_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode="):
        CheckpointManager(tmp_path / "r", monitor="val_score")
