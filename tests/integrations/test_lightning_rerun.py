"""Fitting again on a finished run: Lightning skips its training loop, the callback still ends it.

A run is finished when its stopper stopped or its epochs ran out; ``trainer.fit`` on the same
directory (``resume=True``) then trains no further, and ``on_train_end`` is never called.
"""

from __future__ import annotations

import pytest

pytest.importorskip("lightning")

import torch

from highmark.integrations.lightning import HighmarkCallback
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import read_run_info

from .lightning_fit import WARNINGS, fit

pytestmark = WARNINGS


def best_weights(run_dir: str) -> dict[str, torch.Tensor]:
    with CheckpointManager(run_dir, monitor="val_loss", read_only=True) as ckpt:
        return dict(ckpt.restore("best", keys=["model"])["model"])


def assert_same(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def test_fitting_a_stopped_run_again_ends_on_its_best_weights(run_dir: str) -> None:
    first = HighmarkCallback(run_dir, patience=2)
    fit([first], max_epochs=60)
    assert first.best_step != first.stopper.stopped_step  # the latest weights are not the best
    again = HighmarkCallback(run_dir, patience=2)
    model, _ = fit([again], max_epochs=60)
    assert again.best_step == first.best_step
    assert_same(model, best_weights(run_dir))


def test_fitting_a_run_out_of_epochs_again_ends_on_its_best_weights(run_dir: str) -> None:
    first = HighmarkCallback(run_dir, patience=50, keep_last=1)
    fit([first], max_epochs=12)
    assert first.best_step is not None
    assert first.best_step < 11  # the latest weights are not the best
    again = HighmarkCallback(run_dir, patience=50, keep_last=1)
    model, _ = fit([again], max_epochs=12)
    assert again.best_step == first.best_step
    assert_same(model, best_weights(run_dir))


def test_fitting_a_finished_run_again_appends_to_its_record(run_dir: str) -> None:
    fit([HighmarkCallback(run_dir, patience=2)], max_epochs=60)
    before = read_run_info(run_dir)
    assert before is not None
    for _ in range(2):
        fit([HighmarkCallback(run_dir, patience=2)], max_epochs=60)
    after = read_run_info(run_dir)
    assert after is not None
    assert len(after["resumed"]) == 2
    assert [r["from_step"] for r in after["resumed"]] == [before["stop_step"]] * 2
    for key in ("started", "epochs_run", "steps_run", "status", "stop_step", "best_step"):
        assert after[key] == before[key], key
