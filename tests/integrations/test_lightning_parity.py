"""The attributes of Lightning's ModelCheckpoint and EarlyStopping, and ``ckpt_path="best"``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from highmark.integrations._lightning_parity import StepDirectoryIO
from highmark.integrations.lightning import HighmarkCallback
from highmark.store.manager import CheckpointManager

from .lightning_fit import WARNINGS, ex, fit

pytestmark = WARNINGS


class WithTestStep(ex.DigitsMLP):  # type: ignore[misc, name-defined]
    """The digits MLP with a test step (the loss, logged as ``test_loss``)."""

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", torch.nn.functional.cross_entropy(self(x), y))


def run(run_dir: str) -> CheckpointManager:
    return CheckpointManager(run_dir, monitor="val_loss", read_only=True)


def test_best_and_last_model_paths_are_the_runs_step_directories(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=2)
    fit([cb], max_epochs=60)
    with run(run_dir) as ckpt:
        assert ckpt.best is not None
        assert ckpt.latest is not None
        assert ckpt.best.step != ckpt.latest.step
        assert cb.best_model_path == ckpt.best.path
        assert cb.last_model_path == ckpt.latest.path
    assert cb.dirpath == run_dir
    assert os.path.isfile(os.path.join(cb.best_model_path, "manifest.json"))


def test_best_model_score_and_best_k_models_hold_the_monitored_values(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=3, keep_best=3)
    fit([cb], max_epochs=60)
    with run(run_dir) as ckpt:
        ranked = sorted(ckpt.checkpoints(), key=lambda c: (c.metrics["val_loss"], c.step))[:3]
    assert isinstance(cb.best_model_score, torch.Tensor)
    assert cb.best_model_score.item() == pytest.approx(cb.stopper.best)
    assert list(cb.best_k_models) == [c.path for c in ranked]
    assert [v.item() for v in cb.best_k_models.values()] == pytest.approx(
        [c.metrics["val_loss"] for c in ranked]
    )


def test_early_stopping_attributes_match_lightnings(run_dir: str) -> None:
    ref = LightningEarlyStopping(monitor="val_loss", patience=2)
    fit([ref], max_epochs=60)
    cb = HighmarkCallback(run_dir, patience=2, restore_best=False)
    fit([cb], max_epochs=60)
    assert (cb.monitor, cb.mode, cb.patience) == (ref.monitor, ref.mode, ref.patience)
    assert cb.stopped_epoch == ref.stopped_epoch > 0
    assert cb.wait_count == ref.wait_count
    assert cb.best_score.item() == pytest.approx(ref.best_score.item())


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_ckpt_path_best_evaluates_the_best_weights(run_dir: str, stage: str) -> None:
    cb = HighmarkCallback(run_dir, patience=2, restore_best=False)  # fit ends on the latest
    model, trainer = fit([cb], max_epochs=60, model=WithTestStep())
    with run(run_dir) as ckpt:
        assert ckpt.best is not None
        best = ckpt.restore("best", keys=["model"])["model"]
        best_loss = ckpt.best.metrics["val_loss"]
    _, val = ex.digits_loaders()
    results = getattr(trainer, stage)(model, val, ckpt_path="best", verbose=False)
    assert results[0][f"{stage.replace('validate', 'val')}_loss"] == pytest.approx(best_loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key
    assert not isinstance(trainer.strategy.checkpoint_io, StepDirectoryIO)


def test_ckpt_path_of_a_step_directory_evaluates_its_weights(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir, patience=2)  # fit ends on the best, not on the latest
    model, trainer = fit([cb], max_epochs=60)
    with run(run_dir) as ckpt:
        assert ckpt.latest is not None
        latest = ckpt.restore("latest", keys=["model"])["model"]
        latest_loss = ckpt.latest.metrics["val_loss"]
    _, val = ex.digits_loaders()
    results = trainer.validate(model, val, ckpt_path=cb.last_model_path, verbose=False)
    assert results[0]["val_loss"] == pytest.approx(latest_loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, latest[key]), key


def test_a_new_trainer_validates_the_best_of_the_run_directory(run_dir: str) -> None:
    fit([HighmarkCallback(run_dir, patience=2, restore_best=False)], max_epochs=60)
    with run(run_dir) as ckpt:
        best = ckpt.restore("best", keys=["model"])["model"]
    trainer = ex.make_trainer(1, [HighmarkCallback(run_dir, patience=2)])
    model = ex.DigitsMLP()
    _, val = ex.digits_loaders()
    trainer.validate(model, val, ckpt_path="best", verbose=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key


@pytest.mark.filterwarnings("ignore:two checkpointers run")
def test_ckpt_path_of_a_lightning_checkpoint_is_still_loaded_by_lightning(tmp_path: Path) -> None:
    cb = HighmarkCallback(tmp_path / "run", patience=2)
    lightning_ckpt = ModelCheckpoint(dirpath=tmp_path / "pl", save_last=True, save_top_k=0)
    _, trainer = fit([cb, lightning_ckpt], max_epochs=3, enable_checkpointing=True)
    last = torch.load(tmp_path / "pl" / "last.ckpt", weights_only=True)["state_dict"]
    fresh = ex.DigitsMLP()
    _, val = ex.digits_loaders()
    trainer.validate(fresh, val, ckpt_path=os.fspath(tmp_path / "pl" / "last.ckpt"), verbose=False)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, last[key]), key


@pytest.mark.parametrize("highmark_first", [True, False])
def test_warns_once_what_best_means_when_lightnings_model_checkpoint_also_saves(
    tmp_path: Path, highmark_first: bool
) -> None:
    cb = HighmarkCallback(tmp_path / "run", patience=2)
    theirs = ModelCheckpoint(dirpath=tmp_path / "pl", monitor="val_loss")
    callbacks: list[pl.Callback] = [cb, theirs] if highmark_first else [theirs, cb]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer = fit(callbacks, max_epochs=3, enable_checkpointing=True)
        _, val = ex.digits_loaders()
        trainer.validate(trainer.lightning_module, val, verbose=False)
    ours = [str(w.message) for w in caught if "two checkpointers run" in str(w.message)]
    assert len(ours) == 1
    means = "highmark's run" if highmark_first else "Lightning's ModelCheckpoint"
    assert 'ckpt_path="best" means the best' in ours[0]
    assert means in ours[0].split("means", 1)[1]


def test_lightning_refuses_it_with_enable_checkpointing_false(run_dir: str) -> None:
    with pytest.raises(MisconfigurationException, match="enable_checkpointing=False"):
        ex.make_trainer(3, [HighmarkCallback(run_dir)], enable_checkpointing=False)


def test_parity_attributes_are_empty_before_the_first_checkpoint(run_dir: str) -> None:
    cb = HighmarkCallback(run_dir)
    assert (cb.best_model_path, cb.last_model_path, cb.best_k_models) == ("", "", {})
    assert cb.best_model_score is None
    assert not os.path.exists(run_dir)  # reading them created nothing
