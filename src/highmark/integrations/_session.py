"""The framework-free half of every ``HighmarkCallback``: policy, store and history.

Imports no framework. Each integration builds one :class:`Session` and maps its framework's hooks
onto :meth:`Session.evaluate`, :meth:`Session.save`, :meth:`Session.resume_state` and
:meth:`Session.best_state`, so every framework writes an ordinary highmark run (its ``run.json``
is a :class:`~highmark.store.runfiles.RunInfo`, as a Run's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from highmark.errors import CheckpointError, ConfigError, CorruptCheckpointError
from highmark.policy.retention import KeepBest
from highmark.policy.stopping import EarlyStopping
from highmark.run.defaults import patience_budget_note
from highmark.store.index import CheckpointInfo
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import HistoryWriter, RunInfo, read_history, read_run_info

__all__ = ["Session"]

logger = logging.getLogger(__name__)


def _count(info: Mapping[str, Any], key: str) -> int:
    value = info.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Session:
    """The framework-independent half of every ``HighmarkCallback``: policy, store and history.

    Only the writing process (rank 0) calls :meth:`open`; every process runs the policy.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        framework: str,
        unit: str,
        stopper: EarlyStopping,
        keep_best: int,
        keep_last: int,
        keep_every: int | None,
        async_save: bool | str,
        restore_best: bool,
        resume: bool,
        storage_options: Mapping[str, Any] | None,
    ) -> None:
        self.directory = os.fspath(directory)
        self.framework = framework
        self.unit = unit
        self.stopper = stopper
        self.keep_best = keep_best
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.async_save = async_save
        self.restore_best = restore_best
        self.resume = resume
        self.storage_options = dict(storage_options) if storage_options else None
        self.manager: CheckpointManager | None = None
        self.history: HistoryWriter | None = None
        self.started = time.time()
        self.evaluations = 0
        self.last_step: int | None = None
        self.resumed_from: int | None = None
        self.resumed_metadata: dict[str, Any] = {}  # of the checkpoint resumed from
        self.budget: int | None = None
        self.epochs_run = 0
        self.records = 0
        self.steps_run = 0
        self._earlier: dict[str, Any] = {}  #: what run.json keeps of earlier sessions
        self._resumed: list[dict[str, Any]] = []  #: run.json's "resumed" records
        self._fences: list[Any] = []  # hook handles of deferred async saves
        self._replace_after: int | None = None  # see continue_from

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        """Opens the run for writing (takes the lock) and starts its history."""
        if self.manager is not None:
            return
        if self.budget is not None and self.unit == "epoch":
            self.warn_patience_budget(self.budget, "epoch")
        self.manager = CheckpointManager(
            self.directory,
            monitor=self.stopper.monitor,
            keep_best=self.keep_best,
            keep_last=self.keep_last,
            keep_every=self.keep_every,
            async_save=self.async_save,
            storage_options=self.storage_options,
        )
        if self.manager.latest is None:
            self.history = HistoryWriter(self.manager.storage)
            self.history.truncate(0)  # a fresh run: nothing of an earlier attempt is kept
            self.records = 0
        elif not self.resume:
            self.manager.close()
            self.manager = None
            raise ConfigError(
                f"{self.directory} already holds checkpoints and resume=False: remove the "
                "directory (or choose another) to start over, or pass resume=True to continue"
            )
        else:
            try:
                self.history = HistoryWriter(self.manager.storage)
                history = read_history(self.directory, storage_options=self.storage_options)
                self.records = len(history)
                self._continue_info()
            except BaseException:
                self.manager.close()
                self.manager, self.history = None, None
                raise
        self._write_info("running")

    def _continue_info(self) -> None:
        """Takes up the run's ``run.json`` when continuing it: its start, its ``resumed`` list and
        the epochs and steps run so far stay; only what this session changes is rewritten."""
        try:
            info = read_run_info(self.directory, storage_options=self.storage_options)
        except CorruptCheckpointError as exc:  # run.json is a summary; the checkpoints are truth
            logger.warning("%s; it is written anew from this session", exc)
            return
        if info is None:
            return
        resumed = info.get("resumed")
        self._resumed = list(resumed) if isinstance(resumed, list) else []
        self._earlier = {key: info[key] for key in ("started", "continued") if key in info}
        self.epochs_run, self.steps_run = _count(info, "epochs_run"), _count(info, "steps_run")

    @contextlib.contextmanager
    def reading(self) -> Iterator[CheckpointManager]:
        """The open writer, or a read-only view of the run (closed after use) elsewhere."""
        if self.manager is not None:
            yield self.manager
            return
        with CheckpointManager(
            self.directory,
            monitor=self.stopper.monitor,
            storage_options=self.storage_options,
            read_only=True,
        ) as manager:
            yield manager

    def latest(self) -> CheckpointInfo | None:
        """The run's latest checkpoint, if any."""
        with self.reading() as manager:
            return manager.latest

    def install_fences(self, objects: Iterable[Any]) -> None:
        """With ``async_save="deferred"``, makes ``objects`` wait for each save's copy before
        they change the saved state: optimizers before their step, modules holding buffers
        before their forward pass (:func:`highmark.state.torch.fence_hooks`). Undone by
        :meth:`close`.
        """
        if self.manager is None or not self.manager.deferred:
            return
        from highmark.state.torch import fence_hooks  # only the torch-based integrations get here

        self._fences += fence_hooks(self.manager.fence, objects)

    def close(self, status: str) -> None:
        """Waits for pending saves, records the final status and releases the run."""
        if self.manager is None:
            return
        try:
            self.manager.wait()
            self._write_info(status)
        finally:
            for handle in self._fences:
                handle.remove()
            self._fences.clear()
            self.manager.close()
            self.manager = None
            self.history = None

    # -- policy and store --------------------------------------------------------------------
    def evaluate(self, step: int, metrics: Mapping[str, float], epoch: int | None = None) -> bool:
        """Feeds one evaluation to the policy (and the history when writing); returns stop."""
        stop = self.stopper.update(dict(metrics), step=step)
        self.evaluations += 1
        self.last_step = step
        if self.history is not None:
            record = {"step": step, "epoch": epoch, "time": time.time(), "metrics": dict(metrics)}
            self.history.append(record)
            self.records += 1
        return stop

    def save(
        self,
        step: int,
        state: dict[str, Any],
        metrics: Mapping[str, float],
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo | None:
        """Saves ``state`` plus the stopper's state as checkpoint ``step`` (writer only)."""
        if self.manager is None:
            return None
        full = dict(state)
        full["stopper"] = self.stopper.state_dict()
        meta = {"framework": self.framework, "history_records": self.records, **(metadata or {})}
        replace = self._replace_after is not None and step > self._replace_after
        info = self.manager.save(step, full, metrics=dict(metrics), metadata=meta, force=replace)
        self._write_info("running")
        return info

    def resume_state(self, keys: Sequence[str] | None = None) -> tuple[int, Any] | None:
        """Loads the latest checkpoint and its stopper state when resuming: (step, state)."""
        if not self.resume:
            return None
        with self.reading() as manager:
            latest = manager.latest
            if latest is None:
                return None
            wanted = None if keys is None else [*keys, "stopper"]
            state = manager.restore(latest.step, keys=wanted)
        self.stopper.load_state_dict(state.pop("stopper"))
        self.resumed_from = latest.step
        self.resumed_metadata = dict(latest.metadata)
        if self.stopper.should_stop:
            logger.info("run %s had stopped: %s", self.directory, self.stopper.reason)
        if self.manager is not None and self.history is not None:
            self.manager.protect(latest.step, "resumed from")
            self.history_to(int(latest.metadata.get("history_records", self.records)))
            self._resumed.append({"from_step": latest.step, "at": time.time()})
        logger.info("resuming %s from checkpoint step %d", self.directory, latest.step)
        return latest.step, state

    def continue_from(self, stopper_state: Mapping[str, Any], step: int, records: int) -> None:
        """Continues the run from the framework's own checkpoint at ``step``, which restored the
        rest: the stopper takes ``stopper_state``, the history goes back to ``records`` records
        (when >= 0), and a checkpoint already saved at a later step (by a continuation that was
        abandoned) is replaced when training reaches that step again, as the framework does.
        """
        self.stopper.load_state_dict(stopper_state)
        self.resumed_from = self._replace_after = step
        if self.history is not None:
            if records >= 0:
                self.history_to(records)
            self._resumed.append({"from_step": step, "at": time.time(), "by": self.framework})
        logger.info(
            "%s continues from the %s checkpoint of step %d", self.directory, self.framework, step
        )

    def history_to(self, records: int) -> None:
        """Drops the history records made after the checkpoint a run resumes from."""
        if self.history is not None and records < self.records:
            self.history.truncate(records)
            self.records = records

    def ranked(self) -> tuple[CheckpointInfo | None, list[CheckpointInfo], CheckpointInfo | None]:
        """The run's checkpoints as a checkpoint callback reports them: the best (the stopper's
        rule), the ``keep_best`` best by the monitored metric (best first) and the latest."""
        with self.reading() as manager:
            best, latest, saved = manager.best, manager.latest, manager.checkpoints()
        by_step = {info.step: info for info in saved}
        top = KeepBest(max(self.keep_best, 1), self.stopper.monitor).ranked(saved)
        return best, [by_step[record.step] for record, _ in top[: max(self.keep_best, 1)]], latest

    def best_state(self, keys: Sequence[str]) -> tuple[int, Any] | None:
        """The state of the best checkpoint (only ``keys``), or None when there is none."""
        with self.reading() as manager:
            manager.wait()
            best = manager.best
            if best is None:
                return None
            return best.step, manager.restore(best.step, keys=list(keys))

    def warn_patience_budget(self, budget: int, unit: str) -> None:
        """Logs a warning when patience cannot run out within ``budget`` evaluations."""
        note = patience_budget_note(self.stopper, budget, unit)
        if note is not None:
            logger.warning("%s: %s", self.directory, note)

    def load_best(self, load_model: Callable[[Any], None]) -> int | None:
        """Hands the best checkpoint's ``"model"`` state to ``load_model``; returns its step.

        A best checkpoint that cannot be restored (damaged, missing, unreadable) is found so
        before any of its bytes reaches the model (a restore verifies every byte first): the
        model keeps its last weights, a warning says why, and None is returned.
        """
        try:
            best = self.best_state(["model"])
        except (CheckpointError, OSError) as err:
            logger.warning(
                "%s: the best checkpoint cannot be restored, the model keeps its last weights: %s",
                self.directory, err,
            )  # fmt: skip
            return None
        if best is None:
            return None
        step, state = best
        load_model(state["model"])
        logger.info("restored the best model of %s (checkpoint step %d)", self.directory, step)
        return step

    def end(self, load_model: Callable[[Any], None]) -> int | None:
        """Ends a finished fit: loads the best model when ``restore_best``, then closes the run.

        Returns:
            The best checkpoint's step when its model was loaded, else None.
        """
        try:
            return self.load_best(load_model) if self.restore_best else None
        finally:
            self.close("budget")

    def _write_info(self, status: str) -> None:
        if self.history is None:
            return
        es = self.stopper
        best = self.manager.best if self.manager is not None else None
        now = time.time()
        config = getattr(es, "config", None)
        info = RunInfo(
            monitor=es.monitor.key,
            mode=es.monitor.mode,
            unit=self.unit,
            budget=self.budget,
            started=self._earlier.get("started", self.started),
            updated=now,
            wall_time=now - self.started,
            status="stopped" if es.should_stop and status != "failed" else status,
            stop_reason=es.reason,
            stop_cause=es.stop_cause.value if es.should_stop else None,
            stop_step=es.stopped_step,
            best_step=es.best_step,
            best_metrics=None if best is None else dict(best.metrics),
            epochs_run=self.epochs_run,
            steps_run=self.steps_run,
            policy=config() if callable(config) else None,
            resumed=list(self._resumed),
            continued=self._earlier.get("continued"),
            framework=self.framework,
        )
        self.history.write_run_info(info)
