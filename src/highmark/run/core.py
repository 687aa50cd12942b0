"""`Run`: one object that drives a PyTorch training loop — stop, save, restore the best, resume.

A Run joins three parts that share one comparator: an :class:`~highmark.EarlyStopping` (when to
stop), a :class:`~highmark.CheckpointManager` ranking checkpoints with the stopper's own
:class:`~highmark.Monitor` (what to keep), and the torch capture of everything needed to continue
exactly (model, optimizer, scheduler, scaler, stopper, counters, data order and RNG states).

Saves happen at *step boundaries*: when the loop asks :meth:`Run.epochs` (or :meth:`Run.steps`)
for the next epoch, after the whole body — training, evaluation, ``run.report(...)``, a scheduler
step — has run. A checkpoint therefore always holds a state the loop can continue from.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from highmark.errors import ConfigError
from highmark.policy.schedule import SaveSchedule
from highmark.run import loop
from highmark.run.defaults import DEFAULTS, build_stopping
from highmark.run.loader import ResumableLoader
from highmark.run.saving import RESERVED
from highmark.run.signals import SignalCatcher
from highmark.run.state import RunState
from highmark.run.summary import summary_data, summary_text
from highmark.store.runfiles import HistoryWriter, metric_value

if TYPE_CHECKING:
    from highmark.policy.monitor import Monitor
    from highmark.policy.stopping import EarlyStopping
    from highmark.store.manager import CheckpointManager
    from highmark.store.storage import Storage

__all__ = ["Run"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Run:
    """Drives a training loop: stops early, keeps the best checkpoints, resumes bit-exactly.

    Example::

        with highmark.Run("runs/mlp", monitor="val_loss", patience=10, keep_best=3) as run:
            run.track(model=model, optimizer=optimizer, scheduler=scheduler)
            batches = run.loader(train_loader)  # optional: mid-epoch resume
            for epoch in run.epochs(max_epochs=200):
                for xb, yb in batches:
                    ...  # one training step
                run.report(val_loss=evaluate(model))
        print(run.summary())

    Args:
        directory: where checkpoints, ``run.json`` and ``history.jsonl`` go (path or fsspec URL).
        monitor: the metric to watch (ignored when ``stopping`` is given).
        mode: ``"min"``, ``"max"`` or ``"auto"``: read from the metric's name (``max`` for
            accuracy-like names, ``min`` for losses and errors); a name that says neither
            raises :class:`~highmark.errors.ConfigError` asking for ``mode``.
        patience: evaluations without improvement before stopping (a warning is logged when it
            is not smaller than the loop's budget: it could never stop the run).
        stopping: a ready :class:`~highmark.EarlyStopping` instead of the three arguments above
            and ``stopping_kwargs``.
        keep_best: how many best checkpoints to keep.
        keep_last: how many latest checkpoints to keep.
        keep_every: keep every checkpoint whose step is a multiple of this, for good.
        save_every: save every N evaluations, or ``"auto"`` (Young's formula with ``mtbf``).
            An evaluation that improves the monitored metric is always saved, and so is the
            final state.
        mtbf: mean time between failures in seconds, for ``save_every="auto"``.
        restore_best: when the loop ends for any reason after at least one evaluation, load the
            best checkpoint's weights into the tracked model(s).
        resume: continue from the latest intact checkpoint in ``directory`` when there is one.
            A checkpoint that does not fit the tracked objects raises
            :class:`~highmark.errors.ConfigError` naming the key and both shapes, and leaves the
            directory (its ``run.json`` too) as it was.
        async_save: write checkpoints in a background thread (the loop waits only for the copy).
            ``"deferred"``: the copy runs in the background too; the tracked optimizers wait for
            it before their next step, and tracked models with buffers before their next
            forward pass (hooks installed by :meth:`track`). Change the tracked state in any
            other way (an EMA update, clipping weights by hand) only after
            ``run.manager.fence()``, or that save is dropped with
            :class:`~highmark.errors.StateChangedError`.
        storage_options: passed to fsspec for remote directories.
        handle_signals: save and exit cleanly on SIGTERM / SIGINT / SIGUSR1.
        **stopping_kwargs: any other :class:`~highmark.EarlyStopping` argument (``min_delta``,
            ``baseline``, ``start_from``, ``criteria``, ``lr_schedule``, ...).

    The defaults are those of every ``HighmarkCallback`` (:mod:`highmark.run.defaults` says why).

    Raises:
        ConfigError: a bad argument or combination, or ``mode="auto"`` with an unclassifiable
            metric name.
        ReadOnlyError: ``directory`` is on read-only storage (``CheckpointManager(directory,
            read_only=True)`` and the ``highmark`` command line can still read it).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | Storage,
        monitor: str = DEFAULTS.monitor,
        mode: str = DEFAULTS.mode,
        patience: int = DEFAULTS.patience,
        *,
        stopping: EarlyStopping | None = None,
        keep_best: int = DEFAULTS.keep_best,
        keep_last: int = DEFAULTS.keep_last,
        keep_every: int | None = DEFAULTS.keep_every,
        save_every: int | str = 1,
        mtbf: float | None = None,
        restore_best: bool = DEFAULTS.restore_best,
        resume: bool = DEFAULTS.resume,
        async_save: bool | str = DEFAULTS.async_save,
        storage_options: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
        **stopping_kwargs: Any,
    ) -> None:
        from highmark.store.manager import CheckpointManager

        stopper = build_stopping(monitor, mode, patience, stopping, stopping_kwargs)
        schedule = SaveSchedule(save_every, mtbf)
        manager = CheckpointManager(
            directory,
            monitor=stopper.monitor,
            keep_best=keep_best,
            keep_last=keep_last,
            keep_every=keep_every,
            async_save=async_save,
            storage_options=dict(storage_options or {}),
        )
        self._state = RunState(
            directory=str(manager.directory),
            stopping=stopper,
            manager=manager,
            history=HistoryWriter(manager.storage),
            schedule=schedule,
            signals=SignalCatcher(),
            restore_best=restore_best,
            resume=resume,
            handle_signals=handle_signals,
        )

    # ------------------------------------------------------------------ public surface
    def track(self, **objects: Any) -> Run:
        """Registers the objects a checkpoint holds (``model=``, ``optimizer=``, ``scheduler=``...).

        Each needs ``state_dict()`` / ``load_state_dict()``; ``None`` values are skipped (e.g.
        ``scaler=None``). The state is checked now, so an unsupported value fails here rather
        than at the first save.

        Raises:
            ConfigError: a loop already started, or a reserved / duplicate name.
            UnsupportedStateError: a state holds something a checkpoint cannot store.
        """
        from highmark.state.torch import fence_hooks
        from highmark.state.tree import check_state_object  # numpy: only once a state is tracked

        state = self._state
        if state.unit is not None:
            raise ConfigError("track() must be called before the loop starts")
        for name, obj in objects.items():
            if obj is None:
                continue
            if name == RESERVED:
                raise ConfigError(f"{RESERVED!r} is reserved for the run's own state")
            if name in state.tracked:
                raise ConfigError(f"{name!r} is already tracked")
            check_state_object(name, obj)
            state.tracked[name] = obj
            if state.manager.deferred:
                state.fences += fence_hooks(state.manager.fence, [obj])
        return self

    def loader(self, iterable: Iterable[T], name: str | None = None) -> ResumableLoader[T]:
        """Wraps a DataLoader (or any re-iterable) so that a pass can resume mid-way.

        The wrapper's position and order state go into every checkpoint. In an epoch loop each
        batch is a step boundary, where a pending SIGTERM/SIGINT/SIGUSR1 is honoured.

        Args:
            iterable: the DataLoader.
            name: a stable name (default: ``loader0``, ``loader1``, ... in creation order).
        """
        loaders = self._state.loaders
        for existing in loaders.values():
            if existing.iterable is iterable:  # wrapping the same loader again (each epoch)
                return existing
        name = name or f"loader{len(loaders)}"
        if name in loaders:
            raise ConfigError(f"a loader named {name!r} already exists")
        wrapped: ResumableLoader[T] = ResumableLoader(
            iterable, boundary=functools.partial(loop.loader_boundary, self._state)
        )
        if name in self._state.loader_states:
            wrapped.load_state_dict(self._state.loader_states.pop(name))
        loaders[name] = wrapped
        return wrapped

    def epochs(self, max_epochs: int) -> Iterator[int]:
        """Yields epoch numbers (from 0) until the stopper says stop or ``max_epochs`` are done.

        When resuming, it starts after the last completed epoch (or re-enters an epoch that was
        interrupted mid-way, with its loaders skipping what was consumed). Call
        :meth:`report` once per epoch, at the end of the body.
        """
        return loop.start(self._state, "epoch", max_epochs)

    def steps(self, max_steps: int) -> Iterator[int]:
        """Yields step numbers (from 0) until the stopper says stop or ``max_steps`` are done.

        Call :meth:`report` every N steps; each step is a boundary where saves happen.
        """
        return loop.start(self._state, "step", max_steps)

    def report(self, **metrics: Any) -> bool:
        """Records one evaluation: writes the history, updates the stopper, schedules a save.

        Returns:
            Whether the stopper says stop (the loop also ends by itself at the next boundary).

        Raises:
            ConfigError: called outside a loop body, or twice for the same epoch/step.
            MetricNotFoundError: the monitored metric is missing.
            TypeError: a value is not a number.
        """
        state = self._state
        if not state.in_body or state.current is None:
            raise ConfigError("report() must be called inside the body of run.epochs()/steps()")
        step = state.current
        if state.reported == step:
            raise ConfigError(f"report() was already called for {state.unit} {step}")
        clean = {k: metric_value(k, v) for k, v in metrics.items()}
        given = {k: v for k, v in clean.items() if v is not None}
        before = state.stopping.best_step
        stop = state.stopping.update(given, step=step)
        improved = state.stopping.best_step == step and before != step
        state.reported = step
        state.evaluations += 1
        state.schedule.evaluated()
        epoch = step if state.unit == "epoch" else None
        state.history.append({"step": step, "epoch": epoch, "time": time.time(), "metrics": clean})
        state.history_len += 1
        state.last_metrics = clean
        if improved:
            state.best_metrics = dict(clean)
            state.pending = "best"
        elif stop:
            state.pending = "final"
        elif state.schedule.due():
            state.pending = state.pending or "interval"
        if stop:
            logger.info("%s: stopping at %s %d: %s", self.directory, state.unit, step, self.reason)
        return bool(stop)

    def summary(self) -> str:
        """A readable multi-line account of the run (best, why it stopped, checkpoints, resume)."""
        return summary_text(summary_data(self._state))

    def close(self) -> None:
        """Ends the run: finishes a loop that is still open, waits for saves, releases the lock."""
        loop.close(self._state)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            loop.record_exit(self._state, exc_type)
        self.close()

    # properties
    @property
    def stopping(self) -> EarlyStopping:
        """The stopping policy (its ``best``, ``wait``, ``reason``, ``stopped_step``...)."""
        return self._state.stopping

    @property
    def monitor(self) -> Monitor:
        """The stopper's Monitor, which ranks the checkpoints too."""
        return self._state.monitor

    @property
    def manager(self) -> CheckpointManager:
        """The run's checkpoint store."""
        return self._state.manager

    @property
    def directory(self) -> str:
        """The run directory (path or URL)."""
        return self._state.directory

    @property
    def schedule(self) -> SaveSchedule:
        """When the run saves: every ``save_every`` evaluations, or at Young's interval."""
        return self._state.schedule

    @property
    def save_every(self) -> int | str:
        """The ``save_every`` argument."""
        return self._state.schedule.every

    @property
    def mtbf(self) -> float | None:
        """The ``mtbf`` argument, in seconds."""
        return self._state.schedule.mtbf

    @property
    def restore_best(self) -> bool:
        """Whether the best weights are loaded back when the loop ends."""
        return self._state.restore_best

    @property
    def resume(self) -> bool:
        """Whether the run continues from its directory's latest checkpoint."""
        return self._state.resume

    @property
    def handle_signals(self) -> bool:
        """Whether SIGTERM / SIGINT / SIGUSR1 save and exit cleanly."""
        return self._state.handle_signals

    @property
    def save_stall_s(self) -> float:
        """How long the loop waited for saves this session, in seconds."""
        return self._state.save_stall_s

    @property
    def saves(self) -> int:
        """How many checkpoints this session saved."""
        return self._state.saves

    @property
    def best_step(self) -> int | None:
        """The epoch/step of the best evaluation (the stopper's ``best_step``)."""
        return self.stopping.best_step

    @property
    def best(self) -> float:
        """The best monitored value so far."""
        return float(self.stopping.best)

    @property
    def best_metrics(self) -> dict[str, float | None] | None:
        """Every metric reported at the best evaluation."""
        best = self._state.best_metrics
        return None if best is None else dict(best)

    @property
    def stopped(self) -> bool:
        """Whether the stopper has said stop."""
        return bool(self.stopping.should_stop)

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped (a sentence), or None while it has not."""
        return self._state.stop_reason

    @property
    def reason(self) -> str | None:
        """The stopper's own account of its state."""
        reason = self.stopping.reason
        return None if reason is None else str(reason)

    @property
    def epoch(self) -> int:
        """The epoch being run, or the number of epochs completed (in a step loop: the step)."""
        state = self._state
        return state.current if state.in_body and state.current is not None else state.done

    @property
    def step(self) -> int:
        """The step being run, or the number of steps completed (in an epoch loop: the epoch)."""
        return self.epoch

    @property
    def status(self) -> str:
        """``running``, ``stopped``, ``budget``, ``failed`` or ``interrupted``."""
        return self._state.status

    @property
    def resumed_from(self) -> int | None:
        """The epoch/step of the checkpoint this session resumed from."""
        return self._state.resumed_from

    @property
    def restored_from(self) -> int | None:
        """The step whose weights the tracked model holds after the loop (restore_best)."""
        return self._state.restored_from
