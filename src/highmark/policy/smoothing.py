"""Smoothing of a noisy monitored value: moving average and exponential moving average.

Non-finite values pass through unsmoothed (so a NaN check still sees them) and never enter the
average. Each filter has ``update``, ``reset``, ``state_dict``/``load_state_dict`` and ``config``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from highmark.errors import ConfigError

__all__ = ["ExponentialMovingAverage", "MovingAverage", "Smoothing", "smoothing_from_config"]


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"smoothing state key {key!r} must hold numbers, got {value!r:.80}")
    return float(value)


@runtime_checkable
class Smoothing(Protocol):
    """A stateful filter over the monitored value (moving average, EMA)."""

    def update(self, value: float) -> float:
        """Feeds one raw value and returns the smoothed one."""
        ...

    def reset(self) -> None:
        """Forgets every value seen."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serialisable filter state."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the state returned by :meth:`state_dict`."""
        ...

    def config(self) -> dict[str, Any]:
        """Returns the JSON constructor arguments, with a ``"kind"`` key."""
        ...


class MovingAverage:
    """Mean of the last ``window`` finite values; non-finite values pass through unsmoothed.

    >>> ma = MovingAverage(2)
    >>> [ma.update(x) for x in (1.0, 3.0, 5.0)]
    [1.0, 2.0, 4.0]
    """

    def __init__(self, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"MovingAverage window must be an int >= 1, got {window!r}")
        self.window = window
        self._values: deque[float] = deque(maxlen=window)

    def update(self, value: float) -> float:
        """Feeds one raw value and returns the mean of the window."""
        if not math.isfinite(value):
            return value
        self._values.append(value)
        return math.fsum(self._values) / len(self._values)

    def reset(self) -> None:
        """Forgets every value seen."""
        self._values.clear()

    def state_dict(self) -> dict[str, Any]:
        """Returns ``{"values": [...]}``, the window's content."""
        return {"values": list(self._values)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the window; ConfigError names a bad key."""
        values = state.get("values")
        if not isinstance(values, list) or len(values) > self.window:
            raise ConfigError(f"smoothing state 'values' must be a list of <= {self.window} floats")
        self._values = deque((_number(v, "values") for v in values), maxlen=self.window)

    def config(self) -> dict[str, Any]:
        """Returns ``{"kind": "moving_average", "window": n}``."""
        return {"kind": "moving_average", "window": self.window}


class ExponentialMovingAverage:
    """EMA ``s = alpha*x + (1-alpha)*s`` started at the first finite value.

    Non-finite values pass through unsmoothed and leave the average unchanged.

    >>> ema = ExponentialMovingAverage(0.5)
    >>> [ema.update(x) for x in (1.0, 3.0, 5.0)]
    [1.0, 2.0, 3.5]
    """

    def __init__(self, alpha: float) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ConfigError(f"ExponentialMovingAverage alpha must be in (0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self._value: float | None = None

    def update(self, value: float) -> float:
        """Feeds one raw value and returns the average."""
        if not math.isfinite(value):
            return value
        if self._value is None:
            self._value = value
        else:
            self._value = self.alpha * value + (1.0 - self.alpha) * self._value
        return self._value

    def reset(self) -> None:
        """Forgets every value seen."""
        self._value = None

    def state_dict(self) -> dict[str, Any]:
        """Returns ``{"value": float | None}``."""
        return {"value": self._value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the average; ConfigError names a bad key."""
        if "value" not in state:
            raise ConfigError("smoothing state misses key 'value'")
        value = state["value"]
        self._value = None if value is None else _number(value, "value")

    def config(self) -> dict[str, Any]:
        """Returns ``{"kind": "ema", "alpha": a}``."""
        return {"kind": "ema", "alpha": self.alpha}


def smoothing_from_config(config: Mapping[str, Any] | Smoothing | None) -> Smoothing | None:
    """Builds a smoothing filter from its :meth:`config` dict (or passes an object through)."""
    if config is None or (isinstance(config, Smoothing) and not isinstance(config, type)):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"smoothing must be a Smoothing, a config dict or None, got {config!r}")
    kind = config.get("kind")
    if kind == "moving_average":
        return MovingAverage(config.get("window"))  # type: ignore[arg-type]
    if kind == "ema":
        return ExponentialMovingAverage(config.get("alpha"))  # type: ignore[arg-type]
    raise ConfigError(f"smoothing kind must be 'moving_average' or 'ema', got {kind!r}")
