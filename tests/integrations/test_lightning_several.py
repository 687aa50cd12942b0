"""Several highmark callbacks in one trainer, as Lightning allows several EarlyStopping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import ModelCheckpoint

from highmark.integrations.lightning import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history

from .lightning_fit import WARNINGS, fit

pytestmark = WARNINGS

SCRIPT = Path(__file__).with_name("lightning_two_callbacks.py")


def two(root: Path, patience: int = 2) -> tuple[HighmarkCallback, HighmarkCallback]:
    """A callback on val_loss and one on val_acc, each with its own run directory."""
    loss = HighmarkCallback(root / "loss", monitor="val_loss", patience=patience)
    acc = HighmarkCallback(root / "acc", monitor="val_acc", mode="max", patience=patience)
    return loss, acc


def best_step(directory: Path, monitor: str, mode: str) -> int | None:
    with CheckpointManager(directory, monitor=monitor, mode=mode, read_only=True) as ckpt:
        return None if ckpt.best is None else ckpt.best.step


def test_two_callbacks_with_different_monitors_each_keep_their_own_run(tmp_path: Path) -> None:
    loss, acc = two(tmp_path)
    assert loss.state_key != acc.state_key
    _, trainer = fit([loss, acc], max_epochs=40)
    assert trainer.should_stop
    assert best_step(tmp_path / "loss", "val_loss", "min") == loss.stopper.best_step
    assert best_step(tmp_path / "acc", "val_acc", "max") == acc.stopper.best_step
    evaluations = trainer.current_epoch
    assert len(read_history(tmp_path / "loss")) == len(read_history(tmp_path / "acc"))
    assert len(read_history(tmp_path / "acc")) == evaluations


def test_same_monitor_in_two_directories_gets_two_state_keys(tmp_path: Path) -> None:
    first = HighmarkCallback(tmp_path / "a", monitor="val_loss")
    second = HighmarkCallback(tmp_path / "b", monitor="val_loss")
    assert first.state_key != second.state_key


@pytest.mark.filterwarnings("ignore:two checkpointers run")
def test_a_lightning_checkpoint_gives_each_callback_its_own_state(tmp_path: Path) -> None:
    saved = two(tmp_path, patience=20)
    last = ModelCheckpoint(dirpath=tmp_path / "pl", save_last=True, save_top_k=0)
    fit([*saved, last], max_epochs=5, enable_checkpointing=True)
    assert saved[0].stopper.state_dict() != saved[1].stopper.state_dict()
    loaded = two(tmp_path, patience=20)
    ckpt_path = os.fspath(tmp_path / "pl" / "last.ckpt")
    fit([*loaded, ModelCheckpoint(dirpath=tmp_path / "pl")], max_epochs=5, ckpt_path=ckpt_path)
    for before, after in zip(saved, loaded, strict=True):
        assert after.stopper.state_dict() == before.stopper.state_dict()


@pytest.mark.slow
def test_two_callbacks_under_ddp_stop_together_on_every_rank(tmp_path: Path) -> None:
    result = tmp_path / "result"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(SCRIPT), str(tmp_path / "out"), str(result), "--devices", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    loss, acc = ranks[0]["callbacks"]
    assert loss["key"] != acc["key"]
    assert loss["stopped"] is not None or acc["stopped"] is not None
    assert best_step(tmp_path / "out" / "loss", "val_loss", "min") == loss["best"]
    assert best_step(tmp_path / "out" / "acc", "val_acc", "max") == acc["best"]
