"""The Hugging Face Trainer callback, with a real Trainer and a tiny BERT built from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from highmark.history import read_history, read_run_info
from highmark.integrations.transformers import HighmarkCallback
from highmark.store.manager import CheckpointManager

from .conftest import load_example

ex = load_example("transformers_tiny")

# The toy curve: evaluations every 4 steps, eval_loss lowest at step 4, rising after it.


def train(callback: HighmarkCallback, max_steps: int, tmp_path: Path) -> tuple[Any, Any]:
    model = ex.make_model()
    trainer = ex.make_trainer(model, [callback], max_steps, str(tmp_path / "hf-out"))
    trainer.train()
    return model, trainer


def test_stops_by_policy_on_eval_loss(run_dir: str, tmp_path: Path) -> None:
    cb = HighmarkCallback(run_dir, patience=2)
    _, trainer = train(cb, 60, tmp_path)
    assert cb.stopper.best_step == 4
    assert cb.stopper.stopped_step == 12
    assert trainer.state.global_step == 12
    assert [r["step"] for r in read_history(run_dir)] == [4, 8, 12]
    info = read_run_info(run_dir)
    assert info is not None
    assert info["status"] == "stopped"
    assert info["unit"] == "step"


def test_a_name_without_prefix_means_the_eval_metric(run_dir: str) -> None:
    assert HighmarkCallback(run_dir, monitor="loss").stopper.monitor.key == "eval_loss"


def test_keeps_the_best_checkpoint_and_ends_on_the_best_model(run_dir: str, tmp_path: Path) -> None:
    cb = HighmarkCallback(run_dir, patience=2, keep_best=1, keep_last=1)
    model, _ = train(cb, 60, tmp_path)
    with CheckpointManager(run_dir, monitor="eval_loss", read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == [4, 12]
        saved = ckpt.restore("best")
    assert cb.best_step == 4
    assert set(saved) >= {"model", "optimizer", "scheduler", "stopper"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key


def test_resume_continues_the_step_count_and_the_stopper(run_dir: str, tmp_path: Path) -> None:
    first = HighmarkCallback(run_dir, patience=2)
    train(first, 8, tmp_path)
    assert first.stopper.stopped_step is None
    resumed = HighmarkCallback(run_dir, patience=2)
    _, trainer = train(resumed, 60, tmp_path)
    assert resumed.session.resumed_from == 8
    assert resumed.stopper.stopped_step == 12
    assert trainer.state.global_step == 12
    assert [r["step"] for r in read_history(run_dir)] == [4, 8, 12]


def test_evaluate_outside_train_is_not_recorded(run_dir: str, tmp_path: Path) -> None:
    cb = HighmarkCallback(run_dir, patience=2)
    _, trainer = train(cb, 8, tmp_path)
    trainer.evaluate()
    assert len(read_history(run_dir)) == 2


def test_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    callback = ex.main(["--out", str(tmp_path / "ex"), "--max-steps", "8"])
    assert callback.best_step == 4
    assert "highmark ls" in capsys.readouterr().out
