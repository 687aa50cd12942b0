"""best_checkpoint on real studies whose trials saved real checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pytest

from highmark.errors import CheckpointNotFoundError
from highmark.integrations.optuna import HighmarkPruner, best_checkpoint, trial_directory
from highmark.store.manager import CheckpointManager

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_of(curves: Sequence[Sequence[float]], root: Path, save: bool = True) -> optuna.Study:
    """One trial per curve: each epoch saved (value and trial number) and reported."""
    study = optuna.create_study(pruner=HighmarkPruner(patience=1))

    def objective(trial: optuna.Trial) -> float:
        curve = curves[trial.number]
        with CheckpointManager(trial_directory(root, trial), monitor="val_loss") as ckpt:
            for step, value in enumerate(curve):
                if save:
                    state = {"value": np.array([value]), "trial": np.array([trial.number])}
                    ckpt.save(step, state, metrics={"val_loss": value})
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return min(curve)

    study.optimize(objective, n_trials=len(curves))
    return study


PLATEAUS = [[1.0, 0.5, 0.6, 0.7], [0.9, 0.3, 0.4, 0.5], [2.0, 1.5, 1.6, 1.7]]  # all pruned


def test_optuna_has_no_best_trial_when_every_trial_was_pruned(tmp_path: Path) -> None:
    study = study_of(PLATEAUS, tmp_path)
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.PRUNED}
    with pytest.raises(ValueError, match="No trials are completed yet"):
        _ = study.best_trial


def test_with_every_trial_pruned_it_is_the_best_checkpoint_of_the_pruned_trials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = study_of(PLATEAUS, tmp_path)
    with caplog.at_level(logging.WARNING, logger="highmark.integrations.optuna"):
        state = best_checkpoint(study, tmp_path)
    assert (int(state["trial"][0]), float(state["value"][0])) == (1, 0.3)
    assert "no completed trial" in caplog.text
    assert "trial 1 step 1" in caplog.text


def test_a_completed_trial_is_preferred_to_a_better_pruned_one(tmp_path: Path) -> None:
    study = study_of([[0.2, 0.1, 0.15, 0.16], [0.9, 0.8, 0.7, 0.6]], tmp_path)
    assert [t.state.name for t in study.trials] == ["PRUNED", "COMPLETE"]
    assert int(best_checkpoint(study, tmp_path)["trial"][0]) == 1  # study.best_trial, as before


def test_with_every_trial_pruned_and_nothing_saved_it_is_a_checkpoint_not_found_error(
    tmp_path: Path,
) -> None:
    study = study_of(PLATEAUS, tmp_path, save=False)
    with pytest.raises(CheckpointNotFoundError, match=r"no completed trial.*3 pruned trials"):
        best_checkpoint(study, tmp_path)
