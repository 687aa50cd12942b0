"""Fixtures for the Run tests: tiny models and an uninterrupted reference training run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from run_helpers import TinyModel, load_weights, run_child


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """Runs the child uninterrupted once per argument list (cached); returns its results."""
    cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def get(*extra: str) -> dict[str, Any]:
        if extra not in cache:
            base = tmp_path_factory.mktemp("reference")
            code, child = run_child(base / "run", base / "final.safetensors", "--sync", *extra)
            assert code == 0, child.output
            done = [line for line in child.lines if line.startswith("done ")]
            cache[extra] = {
                "done": done[-1],
                "weights": load_weights(base / "final.safetensors"),
                "lines": child.lines,
                "dir": base / "run",
            }
        return cache[extra]

    return get


@pytest.fixture
def tiny() -> tuple[TinyModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = TinyModel()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
