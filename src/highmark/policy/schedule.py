"""When to save: every N evaluations, or at Young's interval from the measured save cost.

What to *keep* is :mod:`highmark.policy.retention`'s; this module decides when a checkpoint is
*written*. :class:`SaveSchedule` counts evaluations and the time since the last save and says
whether the evaluation just reported is due; with ``every="auto"`` it re-estimates the save cost
from each save (an exponential average) and spaces the saves by Young's optimal interval,
``sqrt(2 * save_cost * mtbf)`` (:func:`young_interval`). Pure stdlib: the caller measures the
cost and reports each evaluation and save. (An evaluation that improves the monitored metric,
and the final state, are always saved: that is the loop's rule, not the schedule's.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from highmark.errors import ConfigError

__all__ = ["SaveSchedule", "young_interval"]


def young_interval(save_cost_s: float, mtbf_s: float) -> float:
    """Young's optimal checkpoint interval ``sqrt(2 * save_cost * mtbf)`` in seconds.

    >>> young_interval(2.0, 3600.0)
    120.0

    Raises:
        ConfigError: a cost or MTBF that is not a positive finite number.
    """
    for name, v in (("save_cost_s", save_cost_s), ("mtbf_s", mtbf_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
    return math.sqrt(2.0 * save_cost_s * mtbf_s)


class SaveSchedule:
    """Says whether a reported evaluation is due to be saved: every ``every`` evaluations, or,
    with ``every="auto"``, once Young's interval for ``mtbf`` has passed since the last save.

    With ``"auto"`` the first evaluation is always due (no save cost is known yet); each
    :meth:`saved` then updates the cost estimate and the interval.

    >>> s = SaveSchedule(every=2)
    >>> s.evaluated(); s.due()
    False
    >>> s.evaluated(); s.due()
    True

    Args:
        every: An int >= 1, or ``"auto"`` (needs ``mtbf``).
        mtbf: The mean time between failures in seconds, for ``every="auto"`` only.
        clock: Returns seconds (default ``time.monotonic``); inject one in tests.

    Raises:
        ConfigError: a bad ``every``, ``"auto"`` without a positive ``mtbf``, or ``mtbf``
            without ``"auto"``.
    """

    def __init__(
        self,
        every: int | str = 1,
        mtbf: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if every == "auto":
            if mtbf is None or isinstance(mtbf, bool) or not 0 < float(mtbf) < math.inf:
                raise ConfigError(f'save_every="auto" needs mtbf= in seconds (> 0), got {mtbf!r}')
        elif isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f'save_every must be an int >= 1 or "auto", got {every!r}')
        elif mtbf is not None:
            raise ConfigError('mtbf= is only used with save_every="auto"')
        self.every = every
        self.mtbf = None if mtbf is None else float(mtbf)
        self.clock = clock or time.monotonic
        self.evaluations = 0  #: evaluations reported since the last save
        self.last_save = self.clock()  #: when the last save ended (or the schedule began)
        self.save_cost: float | None = None  #: the running estimate, in seconds ("auto")
        self.interval: float | None = None  #: seconds between saves ("auto"), once measured

    def evaluated(self) -> None:
        """Counts one reported evaluation."""
        self.evaluations += 1

    def due(self) -> bool:
        """Whether the evaluation just reported should be saved."""
        if self.every == "auto":
            if self.save_cost is None:
                return True
            return self.clock() - self.last_save >= (self.interval or 0.0)
        assert isinstance(self.every, int)
        return self.evaluations >= self.every

    def saved(self, cost: float) -> bool:
        """Records a save that took ``cost`` seconds; returns whether the interval of
        ``every="auto"`` was (re)set by more than a quarter, which is worth telling the user."""
        self.evaluations = 0
        self.last_save = self.clock()
        if self.every != "auto" or self.mtbf is None:
            return False
        # a running estimate: each new measurement weighs 0.3
        self.save_cost = cost if self.save_cost is None else 0.7 * self.save_cost + 0.3 * cost
        interval = young_interval(max(self.save_cost, 1e-6), self.mtbf)
        changed = self.interval is None or abs(interval - self.interval) > 0.25 * self.interval
        self.interval = interval
        return changed
