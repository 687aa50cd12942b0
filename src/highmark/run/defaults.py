"""The defaults that :class:`~highmark.Run` and every ``HighmarkCallback`` share, defined once.

``Run`` and the Lightning, Keras and Hugging Face callbacks take the same arguments; their
signatures use :data:`DEFAULTS`, and ``tests/integrations/test_signatures.py`` checks that every
argument they share by name has the same default. The one allowed difference is the framework's
metric prefix in ``monitor`` (the Hugging Face ``Trainer`` reports ``"eval_loss"``).

Why these values:

* ``mode="auto"``: the direction is read from the metric's name (accuracy-like names are
  maximised, losses and errors minimised) and a name that says neither is refused, so watching
  ``val_acc`` can never silently keep the worst model, as a ``"min"`` default did.
* ``patience=10``: a common choice for per-epoch validation; it tolerates noisy curves, and a
  too-patient stop costs some compute while a too-eager one loses the better model.
* ``keep_best=3`` (with ``keep_last=1``): the best few models to compare or ensemble, for at
  most four checkpoints on disk. It is also the larger of the two earlier defaults, so no run
  directory written with an older highmark loses checkpoints at its next save.
* ``async_save=True``: training waits only for a copy of the state into reused host buffers;
  a failed background save is re-raised at the next save or at the end, so nothing is lost
  silently.
* ``restore_best=True`` and ``resume=True``: the model ends on its best weights, and running the
  same script again continues the run instead of starting over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from highmark.errors import ConfigError
from highmark.policy.stopping import EarlyStopping

__all__ = ["DEFAULTS", "Defaults", "build_stopping", "patience_budget_note"]


@dataclass(frozen=True)
class Defaults:
    """The shared default of each argument of ``Run`` and the callbacks."""

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 10
    keep_best: int = 3
    keep_last: int = 1
    keep_every: int | None = None
    async_save: bool | str = True
    restore_best: bool = True
    resume: bool = True


DEFAULTS = Defaults()


def patience_budget_note(stopping: EarlyStopping, budget: int, unit: str) -> str | None:
    """A sentence saying that patience cannot run out within ``budget`` epochs/steps, or None.

    With at most one evaluation per epoch (or step), the wait after the best evaluation reaches
    at most ``budget - 1``; a patience of ``budget`` or more (in evaluations or steps) can never
    stop the run. Patience in seconds is not judged.
    """
    patience = stopping.patience
    if stopping.patience_unit == "seconds" or budget <= 0 or patience < budget:
        return None
    if unit in ("epoch", "step"):
        limit, raise_it = f"max_{unit}s {budget}", f"max_{unit}s"
    else:  # e.g. the evaluations a Trainer will run
        limit, raise_it = f"{budget} {unit}s in the budget", "the budget"
    return (
        f"patience {patience:g} >= {limit}: the run cannot stop for lack of "
        f"improvement before its budget ends; lower patience or raise {raise_it}"
    )


def build_stopping(
    monitor: str,
    mode: str,
    patience: int,
    stopping: EarlyStopping | None,
    kwargs: Mapping[str, Any],
) -> EarlyStopping:
    """The stopper of a Run or callback: ``stopping`` as given, or one built from the arguments.

    Raises:
        ConfigError: ``stopping`` given together with EarlyStopping arguments that differ from
            the defaults (the two would disagree).
    """
    if stopping is None:
        return EarlyStopping(monitor=monitor, mode=mode, patience=patience, **kwargs)
    given = (monitor, mode, patience)
    if kwargs or given != (DEFAULTS.monitor, DEFAULTS.mode, DEFAULTS.patience):
        raise ConfigError(
            "give either stopping=EarlyStopping(...) or monitor/mode/patience and other "
            "EarlyStopping arguments, not both"
        )
    return stopping
