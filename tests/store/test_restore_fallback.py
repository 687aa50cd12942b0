"""``restore(fallback=True)`` (what resume uses) skips a checkpoint it cannot read, whatever the
reason, for the newest one it can, and logs why; without fallback the reason is raised."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from highmark import Run
from highmark.errors import ConfigError, IncompatibleFormatError
from highmark.store.manager import CheckpointManager


def state(step: int) -> dict[str, Any]:
    return {"model": {"w": torch.full((4,), float(step))}, "step": step}


def saved_run(path: Path, steps: list[int]) -> Path:
    with CheckpointManager(path, keep_last=10) as mgr:
        for step in steps:
            mgr.save(step, state(step))
    return path


def newer_format(run: Path, step: int) -> None:
    """The manifest's format number raised by one, as the issue's reviewer did (2 -> 3)."""
    path = run / f"step-{step:08d}" / "manifest.json"
    text = path.read_text()
    assert '"format": 2,' in text
    path.write_text(text.replace('"format": 2,', '"format": 3,'))


def test_a_newer_format_is_raised_without_fallback(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    newer_format(run, 2)
    with CheckpointManager(run) as mgr, pytest.raises(IncompatibleFormatError, match="format 3"):
        mgr.restore("latest")


def test_fallback_skips_a_checkpoint_of_a_newer_format_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    newer_format(run, 2)
    with CheckpointManager(run) as mgr, caplog.at_level(logging.WARNING, logger="highmark"):
        assert mgr.restore("latest", fallback=True)["step"] == 1
    assert "step-00000002" in caplog.text
    assert "format 3" in caplog.text


def unreadable(run: Path, step: int) -> None:
    path = run / f"step-{step:08d}" / "model.safetensors"
    path.unlink()
    path.symlink_to(path.name)  # a link to itself: any access fails with OSError (ELOOP)


def remove_manifest(run: Path, step: int) -> None:
    (run / f"step-{step:08d}" / "manifest.json").unlink()


def not_json(run: Path, step: int) -> None:
    (run / f"step-{step:08d}" / "manifest.json").write_text("{")


@pytest.mark.parametrize("damage", [newer_format, unreadable, remove_manifest, not_json])
def test_fallback_skips_a_checkpoint_that_cannot_be_read_for_any_reason(
    tmp_path: Path, damage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = saved_run(tmp_path / "run", [1, 2, 3])
    damage(run, 3)
    damage(run, 2)
    with CheckpointManager(run) as mgr, caplog.at_level(logging.WARNING, logger="highmark"):
        assert mgr.restore("latest", fallback=True)["step"] == 1
    assert "step-00000003" in caplog.text
    assert "step-00000002" in caplog.text


def test_fallback_raises_the_requested_checkpoints_error_when_none_can_be_read(
    tmp_path: Path,
) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    newer_format(run, 2)
    newer_format(run, 1)
    with CheckpointManager(run) as mgr, pytest.raises(IncompatibleFormatError, match=r"step-0+2"):
        mgr.restore("latest", fallback=True)


def test_a_request_the_checkpoint_cannot_meet_is_raised_not_skipped(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [1, 2])
    with CheckpointManager(run) as mgr, pytest.raises(ConfigError, match="nope"):
        mgr.restore("latest", keys=["nope"], fallback=True)


def test_resume_falls_back_past_a_checkpoint_of_a_newer_format(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    with Run(tmp_path / "r", patience=10, async_save=False, keep_last=5) as run:
        run.track(model=model)
        for epoch in run.epochs(3):
            run.report(val_loss=1.0 - 0.1 * epoch)
    newer_format(tmp_path / "r", 2)
    epochs = []
    with Run(tmp_path / "r", patience=10, async_save=False, keep_last=5) as again:
        again.track(model=model)
        for epoch in again.epochs(4):
            epochs.append(epoch)
            again.report(val_loss=0.5)
    assert epochs == [2, 3]  # resumed from epoch 1's checkpoint, the newest it can read


def test_fallback_skips_an_older_checkpoint_that_does_not_fit_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with CheckpointManager(tmp_path / "run", keep_last=10) as mgr:
        mgr.save(1, {"model": {"w": torch.ones(4)}, "step": 1})
        mgr.save(2, {"model": {"w": torch.ones(8)}, "step": 2})  # another shape
        mgr.save(3, state(3))
        newer_format(tmp_path / "run", 3)
        live = {"w": torch.zeros(4)}
        with caplog.at_level(logging.WARNING, logger="highmark"):
            mgr.restore("latest", keys=["model"], into=live, fallback=True)
    assert torch.equal(live["w"], torch.ones(4))
    assert "step-00000002" in caplog.text
