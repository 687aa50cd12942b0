"""Composable stopping criteria, for ``EarlyStopping(criteria=...)`` or on their own.

Every criterion has ``update(metrics, step) -> bool``, a ``reason`` sentence once it fires,
``reset()``, ``state_dict()``/``load_state_dict()`` and ``config()``.

>>> from highmark.criteria import AnyOf, GeneralizationLoss, MaxSteps
>>> stop = AnyOf(GeneralizationLoss(5), MaxSteps(100))
>>> stop.update({"val_loss": 0.5}, step=1)
False
"""

from __future__ import annotations

from highmark.policy.criterion import Criterion
from highmark.policy.patience import Patience
from highmark.policy.prechelt import GeneralizationLoss, ProgressQuotient, SuccessiveIncreases
from highmark.policy.rules import (
    AllOf,
    AnyOf,
    Divergence,
    MaxSteps,
    NonFinite,
    Threshold,
    TimeBudget,
)
from highmark.policy.smoothing import ExponentialMovingAverage, MovingAverage
from highmark.policy.stopping import StopCause

__all__ = [
    "AllOf",
    "AnyOf",
    "Criterion",
    "Divergence",
    "ExponentialMovingAverage",
    "GeneralizationLoss",
    "MaxSteps",
    "MovingAverage",
    "NonFinite",
    "Patience",
    "ProgressQuotient",
    "StopCause",
    "SuccessiveIncreases",
    "Threshold",
    "TimeBudget",
]
