"""Run and the three HighmarkCallbacks take the same arguments, with the same defaults."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from highmark import Run
from highmark.run.defaults import DEFAULTS

SHARED = [
    "directory",
    "monitor",
    "mode",
    "patience",
    "stopping",
    "keep_best",
    "keep_last",
    "keep_every",
    "async_save",
    "restore_best",
    "resume",
    "storage_options",
]
# The one allowed difference: the framework's own name for the default metric.
MONITOR = {"lightning": "val_loss", "keras": "val_loss", "transformers": "eval_loss"}


def callback_signature(framework: str) -> inspect.Signature:
    pytest.importorskip(framework)
    module = importlib.import_module(f"highmark.integrations.{framework}")
    return inspect.signature(module.HighmarkCallback.__init__)


def test_run_takes_the_shared_defaults() -> None:
    params = inspect.signature(Run.__init__).parameters
    for field in dataclasses.fields(DEFAULTS):
        assert params[field.name].default == getattr(DEFAULTS, field.name), field.name


@pytest.mark.parametrize("framework", sorted(MONITOR))
def test_callback_shares_runs_arguments_and_defaults(framework: str) -> None:
    run = inspect.signature(Run.__init__).parameters
    callback = callback_signature(framework).parameters
    for name in SHARED:
        assert name in callback, f"{framework} callback lacks {name!r}"
        assert callback[name].kind == run[name].kind, name
        if name != "monitor":
            assert callback[name].default == run[name].default, name
    assert callback["monitor"].default == MONITOR[framework]
    metric = run["monitor"].default.split("_", 1)[1]  # "val_loss" -> "loss"
    assert MONITOR[framework].split("_", 1)[1] == metric


def test_the_defaults_are_one_set() -> None:
    assert (DEFAULTS.mode, DEFAULTS.patience, DEFAULTS.keep_best, DEFAULTS.async_save) == (
        "auto",
        10,
        3,
        True,
    )
