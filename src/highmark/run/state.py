"""Where a :class:`~highmark.Run` stands: the parts and counters its helpers share.

A Run owns one :class:`RunState` and hands it to its helpers (:mod:`.loop`, :mod:`.saving`,
:mod:`.resume`, :mod:`.summary`), which take it explicitly and never import the Run itself: the
Run is the public surface, the state is what the loop, a checkpoint and ``run.json`` are made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from highmark.policy.monitor import Monitor
    from highmark.policy.schedule import SaveSchedule
    from highmark.policy.stopping import EarlyStopping
    from highmark.run.loader import ResumableLoader
    from highmark.run.signals import SignalCatcher
    from highmark.store.manager import CheckpointManager
    from highmark.store.runfiles import HistoryWriter

__all__ = ["RunState"]


@dataclass(eq=False)
class RunState:
    """The parts of a Run (stopper, store, history, schedule, signals) and where its loop stands.

    ``unit`` is ``"epoch"`` or ``"step"`` once a loop started; ``done`` counts the completed
    epochs (or steps), ``current`` is the one whose body runs now. ``pending`` says why the next
    boundary saves (``"best"``, ``"interval"``, ``"final"``), ``last_saved`` is ``done`` at the
    last save. The session fields say how this session relates to earlier ones (resumed,
    continued, already over) and how the run ended (``status``).
    """

    directory: str
    stopping: EarlyStopping
    manager: CheckpointManager
    history: HistoryWriter
    schedule: SaveSchedule
    signals: SignalCatcher
    restore_best: bool
    resume: bool
    handle_signals: bool
    tracked: dict[str, Any] = field(default_factory=dict)
    fences: list[Any] = field(default_factory=list)  #: hook handles of deferred async saves
    loaders: dict[str, ResumableLoader[Any]] = field(default_factory=dict)
    loader_states: dict[str, Any] = field(default_factory=dict)  #: for loaders made later
    # where the loop stands
    unit: str | None = None
    budget: int | None = None
    done: int = 0
    current: int | None = None
    in_body: bool = False
    began: bool = False  #: the loop started (resumed or not) and owns run.json
    reported: int | None = None  #: the epoch/step reported last
    evaluations: int = 0
    batches: int = 0
    history_len: int = 0
    best_metrics: dict[str, float | None] | None = None
    last_metrics: dict[str, float | None] = field(default_factory=dict)
    resume_partial: bool = False  #: resumed from a checkpoint taken mid-epoch
    pending: str | None = None
    last_saved: int | None = None
    save_stall_s: float = 0.0  #: the loop's wait for saves this session (its own thread)
    saves: int = 0
    # how this session relates to earlier ones, and how it ended
    started: float = field(default_factory=time.time)
    wall_before: float = 0.0
    resumed: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    continued: str | None = None
    already_over: str | None = None
    restored_from: int | None = None
    status: str = "running"
    signalled: bool = False
    finished: bool = False
    closed: bool = False
    summary_cache: dict[str, Any] | None = None

    @property
    def monitor(self) -> Monitor:
        """The stopper's Monitor: the one comparator of stopping and ranking."""
        return self.stopping.monitor

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped (a sentence), or None while it has not."""
        reason = self.stopping.reason
        return None if not self.stopping.should_stop or reason is None else str(reason)
