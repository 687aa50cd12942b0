"""The examples in the policy docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "highmark.criteria",
    "highmark.policy.rules",
    "highmark.policy.monitor",
    "highmark.policy.patience",
    "highmark.policy.plateau",
    "highmark.policy.prechelt",
    "highmark.policy.schedule",
    "highmark.policy.smoothing",
    "highmark.policy.stopping",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
