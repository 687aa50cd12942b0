"""The Hugging Face Trainer callback, with a real Trainer and a tiny BERT built from a config."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from highmark.integrations.transformers import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history, read_run_info

from .conftest import load_example

ex = load_example("transformers_tiny")

# The toy curve: evaluations every 4 steps, eval_loss lowest at step 4, rising after it.


def train(
    callback: HighmarkCallback, max_steps: int, tmp_path: Path, before: Any = None
) -> tuple[Any, Any]:
    model = ex.make_model()
    callbacks = [callback] if before is None else [before, callback]
    trainer = ex.make_trainer(model, callbacks, max_steps, str(tmp_path / "hf-out"))
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


class HoldCopiesUntilTheStepChangedTheWeights(TrainerCallback):  # type: ignore[misc]
    """Put before the highmark callback: records the weights each save holds, and holds that
    save's deferred copy until highmark's fence is called (the model holds buffers: at the
    next forward pass) or, without a fence, until the next optimizer step has changed the
    weights (which tears the copy). The Trainer's optimizer is accelerate's wrapper: the step
    that changes the weights is its inner optimizer's."""

    def __init__(self, go: threading.Event) -> None:
        self.go = go
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        kwargs["optimizer"].optimizer.register_step_post_hook(lambda *_: self.go.set())

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.go.clear()  # highmark saves right after this: its copy is held
        model = kwargs["model"]
        self.saved[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.go.set()  # no step follows the last save


def test_deferred_saves_hold_the_next_step_until_the_copy_is_taken(
    run_dir: str, tmp_path: Path, held_copy: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = CheckpointManager.fence

    def releasing(self: CheckpointManager) -> None:  # a fence lets the held copy go on
        held_copy.set()
        fence(self)

    monkeypatch.setattr(CheckpointManager, "fence", releasing)
    hold = HoldCopiesUntilTheStepChangedTheWeights(held_copy)
    cb = HighmarkCallback(run_dir, patience=2, keep_last=3, async_save="deferred")
    model, trainer = train(cb, 60, tmp_path, before=hold)  # a torn copy: StateChangedError
    assert sorted(hold.saved) == [4, 8, 12]
    with CheckpointManager(run_dir, monitor="eval_loss", read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == [4, 8, 12]
        for step, weights in hold.saved.items():
            saved = ckpt.restore(step, keys=["model"])["model"]
            for key, value in weights.items():
                assert torch.equal(saved[key], value), (step, key)
    assert not trainer.optimizer.optimizer._optimizer_step_pre_hooks  # the fences went
    assert not model._forward_pre_hooks


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
