"""Optuna pruner driven by a highmark stopping policy, and per-trial run directories.

::

    from highmark.integrations.optuna import HighmarkPruner, best_checkpoint, trial_directory

    pruner = HighmarkPruner(patience=3, combine_with=optuna.pruners.MedianPruner())
    study = optuna.create_study(pruner=pruner)

    def objective(trial):
        directory = trial_directory("runs/study", trial)
        with highmark.CheckpointManager(directory, monitor="val_loss") as ckpt:
            for epoch in range(20):
                ...
                ckpt.save(epoch, {"model": model.state_dict()}, metrics={"val_loss": v})
                trial.report(v, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return best_val_loss

    study.optimize(objective, n_trials=50)
    state = best_checkpoint(study, "runs/study")  # the best model of the best trial

Each trial's reported values drive its own copy of the policy. The copy is rebuilt from
``trial.intermediate_values`` (the in-memory copy is only a cache, checked against them), so the
pruner gives the same answers with a shared storage and many workers. ``best_checkpoint`` falls
back to the best checkpoint among the pruned trials (with a warning) when no trial completed.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

from highmark.errors import CheckpointNotFoundError, ConfigError
from highmark.integrations._common import require
from highmark.policy.monitor import Monitor
from highmark.policy.stopping import EarlyStopping
from highmark.store.manager import CheckpointManager

require("optuna", "3.5", "optuna")

import optuna  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

__all__ = ["HighmarkPruner", "best_checkpoint", "trial_directory"]

logger = logging.getLogger(__name__)

_Cached = tuple[int, int, float, EarlyStopping]  # values consumed, last step, last value, policy


class HighmarkPruner(optuna.pruners.BasePruner):
    """Prunes a trial when its own learning curve meets a highmark stopping policy.

    Args:
        policy: the ``highmark.EarlyStopping`` to apply to each trial (copied, never updated).
            Its mode must match the study's direction.
        combine_with: another Optuna pruner; the trial is pruned when either says so.
        **options: ``highmark.EarlyStopping`` arguments used instead of ``policy``
            (``patience``, ``min_delta``, ``criteria``...); ``mode`` defaults to the study's
            direction.

    Raises:
        ConfigError: at construction, for a bad or unknown option or a ``policy`` that is not
            an ``EarlyStopping``; at the first ``should_prune()``, for a mode against the
            study's direction.
    """

    def __init__(
        self,
        policy: EarlyStopping | None = None,
        *,
        combine_with: optuna.pruners.BasePruner | None = None,
        **options: Any,
    ) -> None:
        if policy is not None and options:
            raise ConfigError(
                "pass either policy=EarlyStopping(...) or its arguments, "
                f"not both ({sorted(options)})"
            )
        if policy is not None and not isinstance(policy, EarlyStopping):
            raise ConfigError(f"policy must be a highmark.EarlyStopping, got {type(policy)}")
        if combine_with is not None and not isinstance(combine_with, optuna.pruners.BasePruner):
            raise ConfigError(f"combine_with must be an Optuna pruner, got {type(combine_with)}")
        self._template = copy.deepcopy(policy) if policy is not None else None
        self._options = dict(options)
        self._mode = self._options.pop("mode", None)
        _check_options(self._mode, self._options)
        self._other = combine_with
        self._cache: dict[tuple[str, int], _Cached] = {}

    def prune(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether to prune ``trial`` now (Optuna calls it from ``trial.should_prune()``)."""
        stop = self.policy_for(study, trial).should_stop
        other = self._other.prune(study, trial) if self._other is not None else False
        return bool(stop or other)

    def policy_for(
        self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial
    ) -> EarlyStopping:
        """The policy as it stands after the trial's reported values (its ``reason``, ``best``)."""
        values = sorted(trial.intermediate_values.items())
        key = (study.study_name, trial.number)
        cached = self._cache.get(key)
        start = 0
        if cached is not None:
            consumed, last_step, last_value, policy = cached
            same = consumed <= len(values) and consumed > 0
            if same and values[consumed - 1][0] == last_step:
                previous = values[consumed - 1][1]
                same = previous == last_value or (previous != previous and last_value != last_value)
            if same:
                start = consumed
            else:
                policy = self._fresh(study)
        else:
            policy = self._fresh(study)
        for step, value in values[start:]:
            if policy.should_stop:
                break
            policy.update(float(value), step=step)
        if values:
            self._cache[key] = (len(values), values[-1][0], float(values[-1][1]), policy)
        return policy

    def _fresh(self, study: optuna.study.Study) -> EarlyStopping:
        mode = "max" if study.direction == StudyDirection.MAXIMIZE else "min"
        given = self._mode if self._template is None else self._template.monitor.mode
        if given not in (None, "auto", mode):
            raise ConfigError(
                f"the policy's mode is {given!r} but the study's direction "
                f"is {study.direction.name.lower()}"
            )
        if self._template is None:
            return EarlyStopping(mode=mode, **self._options)
        return copy.deepcopy(self._template)


_OPTIONS = frozenset(inspect.signature(EarlyStopping).parameters) - {"mode"}


def _check_options(mode: Any, options: dict[str, Any]) -> None:
    """Checks the pruner's ``EarlyStopping`` arguments now, as Optuna's pruners check theirs."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(
            f"HighmarkPruner got unknown option(s) {', '.join(map(repr, unknown))}; it takes "
            f"highmark.EarlyStopping's arguments: {', '.join(sorted(_OPTIONS | {'mode'}))}"
        )
    if mode not in (None, "auto", "min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max' (or left to the study), got {mode!r}")
    EarlyStopping(
        mode="max" if mode == "max" else "min", **options
    )  # ConfigError names the bad one


def trial_directory(root: str | os.PathLike[str], trial: int | Any) -> str:
    """The run directory of one trial under ``root`` (a path or an fsspec URL).

    Args:
        root: the study's root directory.
        trial: an ``optuna.Trial``, a ``FrozenTrial``, or a trial number.
    """
    number = trial if isinstance(trial, int) else int(trial.number)
    return f"{os.fspath(root).rstrip('/')}/trial-{number:05d}"


def best_checkpoint(
    study: optuna.study.Study,
    root: str | os.PathLike[str],
    *,
    monitor: str = "val_loss",
    mode: str = "min",
    which: str | int = "best",
    keys: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """The saved state of the best trial's best checkpoint (or ``which`` one of that trial).

    The best trial is ``study.best_trial``, Optuna's best completed trial. When no trial
    completed (every one was pruned, which is how Optuna records a trial stopped early), it is
    the pruned trial whose best checkpoint ranks first by ``monitor``, and a warning says so.

    Args:
        study: a finished study whose trials saved into ``trial_directory(root, trial)``.
        root: the study's root directory.
        monitor: the metric the trials' checkpoints are ranked by.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        which: ``"best"``, ``"latest"`` or a step.
        keys: load only these top-level parts of the state (e.g. ``["model"]``).
        storage_options: passed to fsspec for URLs.

    Raises:
        CheckpointNotFoundError: no trial completed and no pruned trial saved a checkpoint
            ranked by ``monitor``.
    """
    ranking = Monitor(monitor, mode=mode)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        number = study.best_trial.number
    else:
        number = _best_pruned(study, root, ranking, storage_options)
    with CheckpointManager(
        trial_directory(root, number),
        monitor=ranking,
        storage_options=storage_options,
        read_only=True,
    ) as manager:
        return manager.restore(which, keys=None if keys is None else list(keys))


def _best_pruned(
    study: optuna.study.Study,
    root: str | os.PathLike[str],
    ranking: Monitor,
    storage_options: dict[str, Any] | None,
) -> int:
    """The pruned trial whose best checkpoint ranks first (a study with no completed trial)."""
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    found: list[tuple[tuple[int, float], int, int, float]] = []
    for trial in pruned:
        with CheckpointManager(
            trial_directory(root, trial),
            monitor=ranking,
            storage_options=storage_options,
            read_only=True,
        ) as manager:
            best = manager.best
        if best is not None:
            value = best.metrics[ranking.key]
            found.append((ranking.sort_key(value), trial.number, best.step, value))
    if not found:
        raise CheckpointNotFoundError(
            f"study {study.study_name!r} has no completed trial, and none of its {len(pruned)} "
            f"pruned trials saved a checkpoint with {ranking.key!r} under {os.fspath(root)}"
        )
    _, number, step, value = min(found)
    logger.warning(
        "study %r has no completed trial (Optuna's best_trial counts completed trials only): "
        "loading the best checkpoint of its %d pruned trials, trial %d step %d (%s=%g)",
        study.study_name,
        len(pruned),
        number,
        step,
        ranking.key,
        value,
    )
    return number
