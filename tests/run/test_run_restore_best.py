"""Restoring the best weights at the end of a Run never leaves the model with damaged weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import nudge

from highmark import Run


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [flip_last_byte, cut_in_half])
def test_a_damaged_best_leaves_the_model_with_its_last_weights_and_says_so(
    tmp_path: Path, tiny: Any, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    model, opt = tiny
    curve = [1.0, 0.4, 0.6, 0.5]
    run = Run(tmp_path / "r", patience=5, async_save=False, keep_last=5)
    with caplog.at_level(logging.WARNING, logger="highmark"), run:
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs(len(curve)):
            nudge(model, opt)
            if epoch == len(curve) - 1:  # the best (epoch 1) is on disk: damage it
                damage(tmp_path / "r" / "step-00000001" / "model.safetensors")
                last = {k: v.clone() for k, v in model.state_dict().items()}
            run.report(val_loss=curve[epoch])
    assert run.best_step == 1
    assert run.restored_from is None
    assert all(torch.equal(v, last[k]) for k, v in model.state_dict().items())
    assert "step-00000001/model.safetensors" in caplog.text
    assert "last weights" in caplog.text
