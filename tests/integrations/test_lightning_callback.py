"""The Lightning callback, with real Lightning trainers on scikit-learn's digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint

from highmark.integrations.lightning import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_history, read_run_info

from .conftest import EXAMPLES
from .lightning_fit import WARNINGS, ex, fit, params

pytestmark = WARNINGS


@pytest.mark.parametrize(("patience", "min_delta"), [(1, 0.0), (3, 0.0), (2, 0.05)])
def test_stops_at_the_same_epoch_as_lightning_early_stopping(
    run_dir: str, patience: int, min_delta: float
) -> None:
    ref = LightningEarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    _, ref_trainer = fit([ref], max_epochs=60)
    ours = HighmarkCallback(
        run_dir, monitor="val_loss", patience=patience, min_delta=min_delta, restore_best=False
    )
    _, trainer = fit([ours], max_epochs=60)
    assert ref.stopped_epoch > 0, "the reference must stop inside the budget for this test"
    assert ours.stopper.stopped_step == ref.stopped_epoch
    assert trainer.current_epoch == ref_trainer.current_epoch


@pytest.mark.parametrize("async_save", [False, True, "deferred"])
def test_writes_an_ordinary_highmark_run(run_dir: str, async_save: bool | str) -> None:
    cb = HighmarkCallback(run_dir, patience=2, keep_best=2, keep_last=1, async_save=async_save)
    fit([cb], max_epochs=60)
    info = read_run_info(run_dir)
    assert info is not None
    assert info["status"] == "stopped"
    assert info["stop_step"] == cb.stopper.stopped_step
    assert info["best_step"] == cb.stopper.best_step
    history = read_history(run_dir)
    assert [r["step"] for r in history] == list(range(cb.stopper.stopped_step + 1))
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        assert ckpt.best is not None
        assert ckpt.best.step == cb.stopper.best_step
        assert len(ckpt.checkpoints()) <= 3


class HoldCopiesUntilTheStepChangedTheWeights(pl.Callback):
    """Put before the highmark callback: records the weights each save holds, and holds that
    save's deferred copy until highmark's fence is called or, without a fence, until the next
    optimizer step has changed the weights (which tears the copy)."""

    def __init__(self, go: threading.Event) -> None:
        self.go = go
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(lambda *_: self.go.set())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.go.clear()  # highmark saves right after this: its copy is held
        self.saved[trainer.current_epoch] = params(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.go.set()  # no step follows the last save


def release_on_fence(monkeypatch: pytest.MonkeyPatch, go: threading.Event) -> None:
    """A call of ``CheckpointManager.fence`` lets the held copy go on (then fences as usual)."""
    fence = CheckpointManager.fence

    def releasing(self: CheckpointManager) -> None:
        go.set()
        fence(self)

    monkeypatch.setattr(CheckpointManager, "fence", releasing)


def test_deferred_saves_hold_the_optimizer_step_until_the_copy_is_taken(
    run_dir: str, held_copy: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_on_fence(monkeypatch, held_copy)
    hold = HoldCopiesUntilTheStepChangedTheWeights(held_copy)
    cb = HighmarkCallback(run_dir, patience=50, keep_last=6, async_save="deferred")
    _, trainer = fit([hold, cb], max_epochs=6)  # a torn copy would raise StateChangedError
    assert sorted(hold.saved) == list(range(6))
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == list(range(6))
        for epoch, weights in hold.saved.items():
            saved = ckpt.restore(epoch, keys=["model"])["model"]
            for key, value in weights.items():
                assert torch.equal(saved[key], value), (epoch, key)
    for optimizer in trainer.optimizers:  # the fence hooks went with the fit
        assert not optimizer._optimizer_step_pre_hooks


def test_restores_the_best_weights_at_the_end_of_fit(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=2)
    model, _ = fit([cb], max_epochs=60)
    assert cb.best_step == cb.stopper.best_step
    assert cb.best_step != cb.stopper.stopped_step
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        best = ckpt.restore("best", keys=["model"])["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key


def test_resumes_from_the_run_directory_like_an_uninterrupted_run(tmp_path: Path) -> None:
    full = HighmarkCallback(tmp_path / "full", patience=3)
    model_full, trainer_full = fit([full], max_epochs=60)
    part = HighmarkCallback(tmp_path / "split", patience=3)
    fit([part], max_epochs=4)
    assert part.stopper.stopped_step is None
    resumed = HighmarkCallback(tmp_path / "split", patience=3)
    model, trainer = fit([resumed], max_epochs=60)
    assert resumed.session.resumed_from == 3
    assert resumed.stopper.stopped_step == full.stopper.stopped_step
    assert trainer.current_epoch == trainer_full.current_epoch
    for key, value in model.state_dict().items():
        assert torch.equal(value, model_full.state_dict()[key]), key
    steps = [r["step"] for r in read_history(tmp_path / "split")]
    assert steps == list(range(full.stopper.stopped_step + 1))


def test_resumed_stopped_run_trains_no_further(run_dir: str) -> None:
    first = HighmarkCallback(run_dir, patience=2)
    fit([first], max_epochs=60)
    again = HighmarkCallback(run_dir, patience=2)
    fit([again], max_epochs=60)
    assert again.stopper.stopped_step == first.stopper.stopped_step
    assert len(read_history(run_dir)) == first.stopper.stopped_step + 1


@pytest.mark.filterwarnings("ignore:two checkpointers run")
def test_lightning_ckpt_path_carries_the_stopper_state(tmp_path: Path) -> None:
    full = HighmarkCallback(tmp_path / "full", patience=3)
    fit([full], max_epochs=60)
    lightning_ckpt = ModelCheckpoint(dirpath=tmp_path / "pl", save_last=True, save_top_k=0)
    part = HighmarkCallback(tmp_path / "split", patience=3)
    fit([part, lightning_ckpt], max_epochs=4, enable_checkpointing=True)
    resumed = HighmarkCallback(tmp_path / "split", patience=3)
    last = os.fspath(tmp_path / "pl" / "last.ckpt")
    same = ModelCheckpoint(dirpath=tmp_path / "pl", save_last=True, save_top_k=0)
    fit([resumed, same], max_epochs=60, ckpt_path=last, enable_checkpointing=True)
    assert resumed.session.resumed_from is None  # Lightning restored it, not the run directory
    assert resumed.stopper.stopped_step == full.stopper.stopped_step


@pytest.mark.filterwarnings("ignore:two checkpointers run")
def test_validating_a_lightning_checkpoint_leaves_the_next_fit_resuming_the_run(
    tmp_path: Path,
) -> None:
    lightning_ckpt = ModelCheckpoint(dirpath=tmp_path / "pl", save_last=True, save_top_k=0)
    fit([HighmarkCallback(tmp_path / "run"), lightning_ckpt], max_epochs=4)
    cb = HighmarkCallback(tmp_path / "run")
    model = ex.DigitsMLP()
    train, val = ex.digits_loaders()
    trainer = ex.make_trainer(60, [cb, ModelCheckpoint(dirpath=tmp_path / "pl")])
    trainer.validate(model, val, ckpt_path=os.fspath(tmp_path / "pl" / "last.ckpt"), verbose=False)
    trainer.fit(model, train, val)
    assert cb.session.resumed_from == 3  # from the run directory, not from the .ckpt


@pytest.mark.slow
def test_ddp_two_cpu_processes_stop_together_and_end_on_the_best_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = tmp_path / "result"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(EXAMPLES / "lightning_digits.py"), "--out", str(out)]
    cmd += ["--devices", "2", "--patience", "2", "--max-epochs", "40", "--result", str(result)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["stopped_step"] is not None
    assert ranks[0]["stopped_step"] == ranks[1]["stopped_step"]
    assert ranks[0]["epochs"] == ranks[1]["epochs"]
    assert ranks[0]["best_step"] == ranks[1]["best_step"]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]
    with CheckpointManager(str(out), monitor="val_loss", read_only=True) as ckpt:
        assert ckpt.best is not None
        assert ckpt.best.step == ranks[0]["best_step"]
        best = ckpt.restore("best", keys=["model"])["model"]
    assert float(sum(v.double().sum() for v in best.values())) == pytest.approx(
        ranks[0]["weights_sum"], rel=1e-12
    )


def test_checks_after_validation_in_steps_when_validation_is_not_every_epoch(
    run_dir: str,
) -> None:
    ref = LightningEarlyStopping(monitor="val_loss", patience=2)
    _, ref_trainer = fit([ref], max_epochs=40, check_val_every_n_epoch=2)
    cb = HighmarkCallback(run_dir, patience=2, restore_best=False)
    _, trainer = fit([cb], max_epochs=40, check_val_every_n_epoch=2)
    assert trainer.current_epoch == ref_trainer.current_epoch
    steps = [r["step"] for r in read_history(run_dir)]
    assert steps == [trainer.global_step * (i + 1) // len(steps) for i in range(len(steps))]
    info = read_run_info(run_dir)
    assert info is not None
    assert info["unit"] == "step"
