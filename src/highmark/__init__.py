"""highmark: stop training at the right time and keep the right models.

The public API is re-exported here lazily, so ``import highmark`` stays cheap and imports no
framework (no torch, no numpy until a checkpoint is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from highmark import errors
from highmark.__about__ import __version__

if TYPE_CHECKING:
    from highmark import criteria
    from highmark.policy.monitor import Monitor
    from highmark.policy.plateau import ReduceLROnPlateau
    from highmark.policy.retention import KeepBest, KeepEvery, KeepLast, MaxBytes, Retention
    from highmark.policy.stopping import EarlyStopping
    from highmark.run.core import Run
    from highmark.run.loader import ResumableLoader
    from highmark.store.index import CheckpointInfo
    from highmark.store.manager import CheckpointManager
    from highmark.store.verification import VerifyReport

__all__ = [
    "CheckpointInfo",
    "CheckpointManager",
    "EarlyStopping",
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "MaxBytes",
    "Monitor",
    "ReduceLROnPlateau",
    "ResumableLoader",
    "Retention",
    "Run",
    "VerifyReport",
    "__version__",
    "criteria",
    "errors",
]

_LAZY = {
    "EarlyStopping": "highmark.policy.stopping",
    "Monitor": "highmark.policy.monitor",
    "ReduceLROnPlateau": "highmark.policy.plateau",
    "KeepBest": "highmark.policy.retention",
    "KeepEvery": "highmark.policy.retention",
    "KeepLast": "highmark.policy.retention",
    "MaxBytes": "highmark.policy.retention",
    "Retention": "highmark.policy.retention",
    "CheckpointManager": "highmark.store.manager",
    "CheckpointInfo": "highmark.store.index",
    "VerifyReport": "highmark.store.verification",
    "Run": "highmark.run.core",
    "ResumableLoader": "highmark.run.loader",
}


def __getattr__(name: str) -> Any:
    if name == "criteria":
        return importlib.import_module("highmark.criteria")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'highmark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
