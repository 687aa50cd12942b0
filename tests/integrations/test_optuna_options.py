"""HighmarkPruner checks its options at construction, as Optuna's own pruners do."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from highmark.errors import ConfigError
from highmark.integrations.optuna import HighmarkPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_optunas_own_pruners_refuse_bad_options_at_construction() -> None:
    with pytest.raises(ValueError, match="warmup steps"):
        optuna.pruners.MedianPruner(n_warmup_steps=-1)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"patience": -1}, "patience"),
        ({"min_delta": "x"}, "min_delta"),
        ({"start_from": -2}, "start_from"),
        ({"patiense": 3}, "patiense"),
        ({"mode": "sideways"}, "mode"),
        ({"policy": "val_loss"}, "policy"),
    ],
)
def test_a_bad_option_is_a_config_error_at_construction(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        HighmarkPruner(**options)


def test_a_mode_against_the_study_direction_is_a_config_error() -> None:
    study = optuna.create_study(direction="minimize", pruner=HighmarkPruner(mode="max"))
    trial = study.ask()
    trial.report(1.0, 0)
    with pytest.raises(ConfigError, match="direction"):
        trial.should_prune()
