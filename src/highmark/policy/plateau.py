"""Reduce the learning rate when the monitored value stops improving, without needing torch.

The learning-rate sequence equals ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s for the same
arguments and values, ``threshold >= 1`` included. The one deliberate difference: with
``threshold_mode="rel"`` and a finite negative best value, torch's ``best * (1 - threshold)``
asks for a *worse* value; here the threshold always points towards better
(``best - threshold * |best|``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from highmark.errors import ConfigError
from highmark.policy.criterion import NUM, check_state
from highmark.policy.monitor import Metrics, Monitor, as_monitor

__all__ = ["ReduceLROnPlateau"]

logger = logging.getLogger(__name__)

Setter = Callable[[list[float]], None]


class ReduceLROnPlateau:
    """Multiplies the learning rates by ``factor`` after ``patience`` evaluations without progress.

    Works on anything with ``param_groups`` (a list of dicts holding ``"lr"``, e.g. a torch
    optimizer), or on ``initial_lrs`` plus an optional ``setter(lrs)`` callback (Keras, JAX).

    Args:
        optimizer: An object with ``param_groups``; or None when ``initial_lrs`` is given.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the default; None means the same): the
            Monitor's mode when a Monitor is given, else the direction the ``monitor`` name says
            (see :func:`~highmark.policy.monitor.infer_mode`). The default monitor is
            ``"val_loss"``, so by default it resolves to ``"min"``, torch's default; a name it
            cannot classify raises ConfigError asking for ``mode``.
        factor: Multiplier applied at each reduction, ``0 <= factor < 1``.
        patience: Evaluations without improvement tolerated; reduction at ``patience + 1``.
        threshold: Improvement needed to count, as in torch.
        threshold_mode: ``"rel"`` (``best * (1 -/+ threshold)``) or ``"abs"``.
        cooldown: Evaluations after a reduction during which bad evaluations are not counted.
        min_lr: Lower bound per group (a float, or a list with one value per group).
        eps: A reduction smaller than this is not applied.
        max_reductions: Stop reducing after this many reductions (None: no limit).
        setter: Called with the new list of rates after each reduction.
        monitor: The metric key (or a Monitor) looked up when :meth:`step` gets a mapping.
        initial_lrs: The starting rates when there is no optimizer.

    >>> rates = []
    >>> sched = ReduceLROnPlateau(initial_lrs=[0.1], patience=1, setter=rates.append)
    >>> [sched.step(v) for v in (1.0, 1.0, 1.0)], sched.lrs
    ([False, False, True], [0.010000000000000002])
    """

    def __init__(
        self,
        optimizer: Any = None,
        mode: str | None = "auto",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
        max_reductions: int | None = None,
        setter: Setter | None = None,
        monitor: str | Monitor = "val_loss",
        initial_lrs: float | Sequence[float] | None = None,
    ) -> None:
        self.monitor = as_monitor(monitor, mode)
        self.mode = self.monitor.mode
        if not _num(factor) or not 0.0 <= factor < 1.0:
            raise ConfigError(f"factor must be a number in [0, 1), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
        if max_reductions is not None and (
            isinstance(max_reductions, bool)
            or not isinstance(max_reductions, int)
            or max_reductions < 0
        ):
            raise ConfigError(f"max_reductions must be an int >= 0 or None, got {max_reductions!r}")
        if not _num(threshold) or threshold < 0:
            raise ConfigError(f"threshold must be a finite number >= 0, got {threshold!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if self.mode == "min" and threshold_mode == "rel" and threshold >= 1:
            logger.warning(
                "ReduceLROnPlateau(mode='min', threshold_mode='rel', threshold=%g) asks for a drop "
                "of 100%% or more: no value >= 0 can ever improve, so the rate is reduced every "
                "patience + 1 evaluations (as torch does); use a threshold < 1 or 'abs'",
                threshold,
            )
        if not _num(eps) or eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}")
        if setter is not None and not callable(setter):
            raise ConfigError(f"setter must be callable, got {setter!r}")
        self.optimizer = optimizer
        self.setter = setter
        if optimizer is not None:
            if initial_lrs is not None:
                raise ConfigError("give either optimizer or initial_lrs, not both")
            groups = getattr(optimizer, "param_groups", None)
            if not isinstance(groups, list) or not all(
                isinstance(g, MutableMapping) and "lr" in g for g in groups
            ):
                raise ConfigError("optimizer must have param_groups: a list of dicts with 'lr'")
            self._own_lrs: list[float] | None = None
        else:
            if initial_lrs is None:
                raise ConfigError("give an optimizer (with param_groups) or initial_lrs")
            lrs = [initial_lrs] if not isinstance(initial_lrs, Sequence) else list(initial_lrs)
            if not lrs or not all(_num(x) and x >= 0 for x in lrs):
                raise ConfigError(f"initial_lrs must be numbers >= 0, got {initial_lrs!r}")
            self._own_lrs = [float(x) for x in lrs]
        n = len(self.lrs)
        if isinstance(min_lr, Sequence):
            if len(min_lr) != n:
                raise ConfigError(f"expected {n} min_lr values (one per group), got {len(min_lr)}")
            self._default_min_lr: float | None = None
            self.min_lrs = [float(x) for x in min_lr]
        else:
            self._default_min_lr = float(min_lr)
            self.min_lrs = [float(min_lr)] * n
        if not all(_num(x) and x >= 0 for x in self.min_lrs):
            raise ConfigError(f"min_lr must be numbers >= 0, got {min_lr!r}")
        self.factor, self.patience, self.cooldown = float(factor), patience, cooldown
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.eps, self.max_reductions = float(eps), max_reductions
        self.reset()

    def reset(self) -> None:
        """Forgets the best value and the counters (the rates stay as they are)."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self.reductions = 0

    @property
    def lrs(self) -> list[float]:
        """The current learning rates, one per group."""
        if self._own_lrs is not None:
            return list(self._own_lrs)
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    @property
    def exhausted(self) -> bool:
        """Whether no further reduction can change a rate (min_lr reached or max_reductions)."""
        if self.max_reductions is not None and self.reductions >= self.max_reductions:
            return True
        mins = self._mins(len(self.lrs))
        return all(
            old - max(old * self.factor, m) <= self.eps
            for old, m in zip(self.lrs, mins, strict=True)
        )

    def is_better(self, a: float, best: float) -> bool:
        """torch's rule, sign-safe for a finite negative ``best`` in rel mode.

        An infinite ``best`` (the start) takes torch's own product, so in max mode the first
        finite value improves on ``-inf`` whatever the threshold.
        """
        t = self.threshold
        if self.threshold_mode == "abs":
            return a < best - t if self.mode == "min" else a > best + t
        flip = best < 0.0 and best != -math.inf  # a finite negative best: |best| keeps the sign
        if self.mode == "min":
            return a < best * (1.0 + t if flip else 1.0 - t)
        return a > best * (1.0 - t if flip else 1.0 + t)

    def step(self, metrics: Metrics) -> bool:
        """Reports one evaluation; returns True when the rates were reduced."""
        current = self.monitor.value(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        reduced = False
        if self.num_bad_epochs > self.patience:
            reduced = self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return reduced

    def _mins(self, n: int) -> list[float]:
        if n != len(self.min_lrs):
            if self._default_min_lr is None:
                raise ConfigError(
                    f"the optimizer has {n} param groups but min_lr has {len(self.min_lrs)} values"
                )
            self.min_lrs = [self._default_min_lr] * n
        return self.min_lrs

    def _reduce(self) -> bool:
        if self.max_reductions is not None and self.reductions >= self.max_reductions:
            return False
        old_lrs = self.lrs
        new_lrs = list(old_lrs)
        for i, (old, m) in enumerate(zip(old_lrs, self._mins(len(old_lrs)), strict=True)):
            new = max(old * self.factor, m)
            if old - new > self.eps:
                new_lrs[i] = new
        if new_lrs == old_lrs:
            return False
        self.reductions += 1
        self._apply(new_lrs, old_lrs)
        return True

    def _apply(self, new_lrs: list[float], old_lrs: list[float]) -> None:
        if self._own_lrs is not None:
            self._own_lrs = list(new_lrs)
        else:
            for group, new, old in zip(self.optimizer.param_groups, new_lrs, old_lrs, strict=True):
                if new != old:
                    lr = group["lr"]
                    if hasattr(lr, "fill_"):  # a tensor learning rate: update it in place
                        lr.fill_(new)
                    else:
                        group["lr"] = new
        if self.setter is not None:
            self.setter(list(new_lrs))

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable state: the counters, the rates when there is no
        optimizer, and the configuration (:meth:`config`), as torch's state carries its own."""
        return {
            "config": self.config(),
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_epoch": self.last_epoch,
            "reductions": self.reductions,
            "min_lrs": list(self.min_lrs),
            "lrs": self._own_lrs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict`; without an optimizer the saved rates go to the setter.

        The configuration in ``state["config"]`` is checked, not applied: a state saved for another
        monitor key or mode is refused (its ``best`` would mean the opposite), while factor,
        patience and the other settings are this scheduler's own, as with ``EarlyStopping``.
        States saved before the configuration was recorded load without that check.

        Raises:
            ConfigError: naming the missing or bad key, or the differing monitor or mode.
        """
        self._check_config(state)
        types = {"best": NUM, "num_bad_epochs": int, "cooldown_counter": int, "last_epoch": int}
        check_state(state, "ReduceLROnPlateau", {**types, "reductions": int, "min_lrs": list})
        check_state(state, "ReduceLROnPlateau", {"lrs": (list, type(None))})
        lrs = state["lrs"]
        if self._own_lrs is not None and (
            lrs is None or len(lrs) != len(self._own_lrs) or not all(_num(x) for x in lrs)
        ):
            raise ConfigError("ReduceLROnPlateau state key 'lrs' does not match the groups")
        if not all(_num(x) for x in state["min_lrs"]):
            raise ConfigError("ReduceLROnPlateau state key 'min_lrs' must hold numbers")
        self.best = float(state["best"])
        self.num_bad_epochs, self.cooldown_counter = (
            state["num_bad_epochs"],
            state["cooldown_counter"],
        )
        self.last_epoch, self.reductions = state["last_epoch"], state["reductions"]
        self.min_lrs = [float(x) for x in state["min_lrs"]]
        if self._own_lrs is not None and lrs is not None:
            self._own_lrs = [float(x) for x in lrs]
            if self.setter is not None:
                self.setter(list(self._own_lrs))

    def _check_config(self, state: Any) -> None:
        saved = state.get("config") if isinstance(state, Mapping) else None
        if saved is None:
            return  # a state written before the configuration was recorded
        if not isinstance(saved, Mapping):
            raise ConfigError(
                f"ReduceLROnPlateau state key 'config' has a bad value: {saved!r:.80}"
            )
        for key, mine in (("monitor", self.monitor.key), ("mode", self.mode)):
            if saved.get(key) != mine:
                raise ConfigError(
                    f"ReduceLROnPlateau state key 'config.{key}' is {saved.get(key)!r}, this "
                    f"scheduler's is {mine!r}: the state belongs to another schedule; build the "
                    f"scheduler with {key}={saved.get(key)!r} or start without the state"
                )

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments (not the optimizer or setter)."""
        return {
            "monitor": self.monitor.key,
            "mode": self.mode,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self._default_min_lr if self._default_min_lr is not None else self.min_lrs,
            "eps": self.eps,
            "max_reductions": self.max_reductions,
        }

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
            f"patience={self.patience}, lrs={self.lrs}, reductions={self.reductions})"
        )


def _num(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
