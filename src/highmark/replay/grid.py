"""Grids of stopping policies: parsing the command line's values, building each policy, modes.

A grid option takes a value ``5``, a list ``2,5,10`` or a range ``0..30[:step]``;
:func:`parse_grid` gives the product of the options, :func:`build_policy` one fresh
:class:`~highmark.EarlyStopping` per grid point, and :func:`resolve_mode` the direction of a metric
when it is not given (``"auto"``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from highmark.errors import ConfigError

__all__ = ["POLICY_OPTIONS", "build_policy", "parse_grid", "parse_values", "resolve_mode"]

# Policy options a grid may vary, with the type of their values.
POLICY_OPTIONS: dict[str, type] = {
    "patience": int,
    "min_delta": float,
    "min_delta_mode": str,
    "mode": str,
    "baseline": float,
    "start_from": int,
    "criteria": str,
    "smoothing": str,
}


def parse_values(text: str, kind: type) -> list[Any]:
    """Parses one grid option: a value ``5``, a list ``2,5,10`` or a range ``0..30[:step]``.

    Ranges include both ends. ``none`` stands for ``None`` (e.g. no baseline).

    >>> parse_values("0..6:2", int)
    [0, 2, 4, 6]
    >>> parse_values("1e-3,0", float)
    [0.001, 0.0]
    """
    values: list[Any] = []
    if kind is str:
        return [v.strip() for v in text.split(",") if v.strip()]
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == "none":
            values.append(None)
            continue
        try:
            if ".." in part:
                lo_text, _, rest = part.partition("..")
                hi_text, _, step_text = rest.partition(":")
                lo, hi = kind(lo_text), kind(hi_text)
                step = kind(step_text) if step_text else kind(1)
                if step <= 0 or hi < lo:
                    raise ConfigError(f"bad range {part!r}: need low <= high and a positive step")
                count = math.floor((hi - lo) / step + 1e-9) + 1
                values.extend(kind(lo + i * step) for i in range(count))
            else:
                values.append(kind(part))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad value {part!r}: expected {kind.__name__} values") from exc
    if not values:
        raise ConfigError(f"no values in {text!r}")
    return values


def parse_grid(options: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The product of the given policy options (name -> grid text), in a stable order."""
    names = [n for n, v in options.items() if v is not None]
    unknown = [n for n in names if n not in POLICY_OPTIONS]
    if unknown:
        raise ConfigError(f"unknown policy option(s) {unknown}; known: {sorted(POLICY_OPTIONS)}")
    axes = [parse_values(str(options[n]), POLICY_OPTIONS[n]) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def _criteria(spec: str, train_monitor: str) -> tuple[list[Any], dict[str, Any]]:
    """Criterion objects and EarlyStopping keywords for a ``+``-joined criteria spec."""
    from highmark.policy.prechelt import GeneralizationLoss, ProgressQuotient, SuccessiveIncreases
    from highmark.policy.rules import MaxSteps

    objects: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in (s.strip() for s in spec.split("+")):
        if not item or item.lower() == "none":
            continue
        name, _, arg = item.partition(":")
        name = name.lower()
        try:
            if name == "gl":
                objects.append(GeneralizationLoss(float(arg)))
            elif name == "pq":
                objects.append(ProgressQuotient(float(arg), train_monitor=train_monitor))
            elif name == "up":
                objects.append(SuccessiveIncreases(int(arg)))
            elif name == "threshold":
                kwargs["stopping_threshold"] = float(arg)
            elif name == "divergence":
                kwargs["divergence_threshold"] = float(arg)
            elif name == "maxsteps":
                objects.append(MaxSteps(int(arg)))
            else:
                raise ConfigError(
                    f"unknown criterion {item!r}; known: gl:A, pq:A, up:S, threshold:V, "
                    "divergence:V, maxsteps:N, none (join several with '+')"
                )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad criterion {item!r}: {exc}") from exc
    return objects, kwargs


def _smoothing(spec: str) -> Any:
    """A smoothing of the monitored value from ``ema:ALPHA``, ``ma:WINDOW`` or ``none``."""
    from highmark.policy.smoothing import ExponentialMovingAverage, MovingAverage

    name, _, arg = spec.strip().lower().partition(":")
    try:
        if name == "ema":
            return ExponentialMovingAverage(float(arg))
        if name == "ma":
            return MovingAverage(int(arg))
    except ValueError as exc:
        raise ConfigError(f"bad smoothing {spec!r}: {exc}") from exc
    if name == "none":
        return None
    raise ConfigError(f"unknown smoothing {spec!r}; known: ema:ALPHA, ma:WINDOW, none")


def build_policy(
    policy: Mapping[str, Any], monitor: str, mode: str = "min", train_monitor: str = "train_loss"
) -> Any:
    """A fresh :class:`~highmark.EarlyStopping` for one grid point."""
    from highmark.policy.stopping import EarlyStopping

    kwargs: dict[str, Any] = {"monitor": monitor, "mode": mode}
    for name, value in policy.items():
        if name == "criteria":
            objects, extra = _criteria(str(value), train_monitor)
            kwargs["criteria"] = tuple(objects)
            kwargs.update(extra)
        elif name == "smoothing":
            kwargs["smoothing"] = _smoothing(str(value))
        else:
            kwargs[name] = value
    return EarlyStopping(**kwargs)


def resolve_mode(
    key: str, mode: str | None, recorded: Iterable[Mapping[str, Any]] = (), option: str = "mode"
) -> str:
    """The direction of ``key``: ``mode`` when it is ``"min"``/``"max"``, else (``"auto"`` or None)
    the mode the runs recorded for ``key`` as their monitor, else the one its name implies
    (:func:`~highmark.policy.monitor.infer_mode`).

    ``recorded`` holds run summaries (``run.json`` contents: their ``monitor`` and ``mode``);
    ``option`` names the argument in the error (``--mode`` style on the command line).

    Raises:
        ConfigError: for an unknown ``mode``, runs that record both directions for ``key``, or a
            name that does not say (it asks for ``mode``, ``--mode`` on the command line).

    >>> resolve_mode("val_f1", "auto"), resolve_mode("lr", None, [{"monitor": "lr", "mode": "max"}])
    ('max', 'max')
    """
    from highmark.policy.monitor import infer_mode

    if mode in ("min", "max"):
        return mode
    if mode not in (None, "auto"):
        raise ConfigError(f"{option} must be 'auto', 'min' or 'max', got {mode!r}")
    ask = f"pass {option} 'min' or 'max' (--{option.replace('_', '-')} on the command line)"
    modes = {str(r.get("mode")) for r in recorded if r.get("monitor") == key and r.get("mode")}
    if len(modes) > 1:
        raise ConfigError(f"the runs record {key!r} both as 'min' and as 'max': {ask}")
    guess = modes.pop() if modes else infer_mode(key)
    if guess is None:
        raise ConfigError(
            f"cannot tell whether a lower or a higher {key!r} is better: no run records it as "
            f"its monitor and its name does not say; {ask}"
        )
    return guess
