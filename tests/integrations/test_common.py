"""The framework-free glue of the integrations: version checks and the callbacks' policy."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from highmark import EarlyStopping
from highmark.errors import ConfigError
from highmark.integrations._common import make_stopper, require, scalar_metrics
from highmark.integrations._session import Session
from highmark.store.runfiles import read_run_info


def test_require_names_the_package_the_version_and_the_extra() -> None:
    with pytest.raises(ImportError, match=r"optuna>=999\.0, found .*highmark\[optuna\]"):
        require("optuna", "999.0", "optuna")


def test_require_reports_a_missing_package() -> None:
    with pytest.raises(ImportError, match="not installed"):
        require("highmark-no-such-package", "1.0", "keras")


def test_require_accepts_a_new_enough_version() -> None:
    assert require("optuna", "3.5", "optuna")


def test_stopper_from_arguments_or_given_but_not_both() -> None:
    given = EarlyStopping(patience=2)
    assert make_stopper("val_loss", "min", 5, given, {}) is given
    built = make_stopper("val_acc", "max", 3, None, {"min_delta": 0.01})
    assert (built.monitor.key, built.monitor.mode, built.patience) == ("val_acc", "max", 3)
    with pytest.raises(ConfigError):
        make_stopper("val_loss", "min", 5, given, {"min_delta": 0.1})


def test_scalar_metrics_keeps_numbers_only() -> None:
    assert scalar_metrics({"a": 1, "b": "x", "c": True, "d": [1, 2], "e": 0.5}) == {
        "a": 1.0,
        "e": 0.5,
    }


def test_importing_the_integrations_package_imports_no_framework() -> None:
    code = (
        "import sys, highmark.integrations; "
        "bad = [m for m in ('torch', 'lightning', 'keras', 'transformers', 'optuna') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _session(directory: str, restore_best: bool) -> Session:
    return Session(
        directory,
        framework="test",
        unit="epoch",
        stopper=EarlyStopping(patience=5),
        keep_best=1,
        keep_last=1,
        keep_every=None,
        async_save=False,
        restore_best=restore_best,
        resume=False,
        storage_options=None,
    )


def _fit(session: Session, losses: list[float]) -> None:
    session.open()
    for step, loss in enumerate(losses):
        session.evaluate(step, {"val_loss": loss})
        session.save(step, {"model": {"w": np.full(2, step, dtype=np.float32)}}, {"val_loss": loss})


@pytest.mark.parametrize("restore_best", [True, False])
def test_end_loads_the_best_model_only_when_asked_and_closes_the_run(
    tmp_path, restore_best
) -> None:
    session = _session(str(tmp_path / "run"), restore_best)
    _fit(session, [0.5, 0.2, 0.4])
    loaded: list[dict[str, np.ndarray]] = []
    assert session.end(loaded.append) == (1 if restore_best else None)
    assert [m["w"].tolist() for m in loaded] == ([[1.0, 1.0]] if restore_best else [])
    assert session.manager is None


def test_a_continued_run_with_a_damaged_run_json_is_written_anew_with_a_warning(
    tmp_path, caplog
) -> None:
    directory = str(tmp_path / "run")
    first = _session(directory, restore_best=False)
    _fit(first, [0.5, 0.2])
    first.close("budget")
    (tmp_path / "run" / "run.json").write_text("{torn")
    session = _session(directory, restore_best=False)
    session.resume = True
    with caplog.at_level(logging.WARNING, logger="highmark.integrations._session"):
        session.open()
    assert "run.json" in caplog.text
    session.close("budget")
    info = read_run_info(directory)
    assert info is not None
    assert info["status"] == "budget"
