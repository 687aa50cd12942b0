"""The Optuna pruner and helpers, with real Optuna studies."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest

from highmark import EarlyStopping
from highmark.errors import ConfigError
from highmark.integrations.optuna import HighmarkPruner, best_checkpoint, trial_directory

from .conftest import load_example

ex = load_example("optuna_digits")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def curve_study(
    pruner: optuna.pruners.BasePruner,
    curve: Sequence[float],
    direction: str = "minimize",
    storage: Any = None,
) -> optuna.Study:
    """One trial that reports ``curve`` and stops when the pruner says so."""
    study = optuna.create_study(direction=direction, pruner=pruner, storage=storage)

    def objective(trial: optuna.Trial) -> float:
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", step)
                raise optuna.TrialPruned()
        return min(curve)

    study.optimize(objective, n_trials=1)
    return study


def test_prunes_when_the_trial_curve_runs_out_of_patience() -> None:
    study = curve_study(HighmarkPruner(patience=2), [1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert study.trials[0].user_attrs["pruned_at"] == 3


def test_an_improving_curve_completes() -> None:
    study = curve_study(HighmarkPruner(patience=2), [1.0, 0.9, 0.8, 0.7])
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_mode_follows_the_study_direction() -> None:
    study = curve_study(HighmarkPruner(patience=2), [0.1, 0.5, 0.4, 0.3], direction="maximize")
    assert study.trials[0].user_attrs["pruned_at"] == 3


def test_a_given_policy_is_copied_not_updated() -> None:
    policy = EarlyStopping(patience=1)
    curve_study(HighmarkPruner(policy), [1.0, 2.0, 3.0])
    assert policy.n_updates == 0


def test_policy_mode_against_the_study_direction_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="direction"):
        curve_study(HighmarkPruner(EarlyStopping(mode="max")), [1.0, 2.0])


def test_policy_and_options_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError):
        HighmarkPruner(EarlyStopping(), patience=3)


def test_combine_with_prunes_when_the_other_pruner_says_so() -> None:
    other = optuna.pruners.ThresholdPruner(upper=0.5)
    study = curve_study(HighmarkPruner(patience=100, combine_with=other), [0.4, 0.3, 0.9, 0.2])
    assert study.trials[0].user_attrs["pruned_at"] == 2


def test_a_fresh_pruner_on_shared_storage_gives_the_same_answer(tmp_path: Path) -> None:
    # Another worker has no in-memory state: it rebuilds the policy from the stored values.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    curve = [1.0, 0.5, 0.6, 0.7, 0.8]
    study = curve_study(HighmarkPruner(patience=10), curve, storage=url)
    stored = optuna.load_study(study_name=study.study_name, storage=url)
    frozen = stored.trials[0]
    other_worker = HighmarkPruner(patience=3)
    assert other_worker.prune(stored, frozen) is True
    assert other_worker.policy_for(stored, frozen).stopped_step == 4


def test_cached_policy_is_rebuilt_when_the_values_differ() -> None:
    pruner = HighmarkPruner(patience=2)
    first = curve_study(pruner, [1.0, 2.0, 3.0])
    assert first.trials[0].state == optuna.trial.TrialState.PRUNED
    # same study name and trial number, a different curve: the cache must not be trusted
    second = optuna.create_study(study_name=first.study_name, pruner=pruner)
    second.enqueue_trial({})
    trial = second.ask()
    trial.report(1.0, 0)
    trial.report(0.5, 1)
    assert trial.should_prune() is False


def test_trial_directory_names_one_run_per_trial(tmp_path: Path) -> None:
    assert trial_directory(tmp_path, 7) == f"{tmp_path}/trial-00007"
    assert trial_directory("s3://bucket/study/", 12) == "s3://bucket/study/trial-00012"


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits MLP tuned with 20 trials under each pruner (real studies)."""
    out: dict[str, Any] = {}
    for name in ("none", "median", "highmark", "highmark+median"):
        root = str(tmp_path_factory.mktemp(name.replace("+", "-")))
        study = ex.run_study(ex.PRUNERS[name](), root, n_trials=20, max_epochs=15)
        out[name] = {"study": study, "root": root, **ex.summarize(study)}
    return out


@pytest.mark.slow
def test_digits_study_comparison_is_sane(studies: dict[str, Any]) -> None:
    table = {k: {m: v[m] for m in ("epochs", "pruned", "best_value")} for k, v in studies.items()}
    print("\noptuna digits, 20 trials x <= 15 epochs:", json.dumps(table, indent=1))
    assert table["none"]["epochs"] == 20 * 15
    assert table["none"]["pruned"] == 0
    assert table["highmark"]["epochs"] < table["none"]["epochs"]
    assert table["highmark+median"]["epochs"] <= table["highmark"]["epochs"] + 15 * 20
    for row in table.values():
        assert math.isfinite(row["best_value"])


@pytest.mark.slow
def test_best_checkpoint_is_the_best_model_of_the_best_trial(studies: dict[str, Any]) -> None:
    study = studies["highmark"]["study"]
    state = best_checkpoint(study, studies["highmark"]["root"], keys=["model"])
    model = ex.make_model(study.best_params["hidden"])
    model.load_state_dict(state["model"])
    assert ex.val_loss(model) == pytest.approx(study.best_value, rel=1e-6)


def test_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = ex.main(["--out", str(tmp_path), "--trials", "2", "--max-epochs", "2"])
    assert summary["epochs"] <= 4
    assert "best model reloaded" in capsys.readouterr().out
