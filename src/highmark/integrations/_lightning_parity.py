"""What Lightning's own checkpoint and early-stopping callbacks expose, for ``HighmarkCallback``.

:class:`LightningParity` gives the callback the attributes of ``ModelCheckpoint``
(``best_model_path``, ``best_model_score``, ``best_k_models``, ``last_model_path``, ``dirpath``)
and of ``EarlyStopping`` (``monitor``, ``mode``, ``patience``, ``wait_count``, ``best_score``),
read from the run and its policy. Paths name highmark step directories
(``<directory>/step-00000042``), not Lightning ``.ckpt`` files: :class:`StepDirectoryIO` is the
``CheckpointIO`` through which ``trainer.validate/test/predict(ckpt_path=...)`` loads one as a
weights-only Lightning checkpoint, from its safetensors files (nothing is unpickled).
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from highmark.integrations._session import Session

__all__ = [
    "LightningParity",
    "StepDirectoryIO",
    "install_io",
    "lightning_checkpoint",
    "remove_io",
    "warn_two_checkpointers",
]


class LightningParity:
    """``ModelCheckpoint`` and ``EarlyStopping`` attributes over :attr:`session`, a mixin.

    The run directory is the source of truth: each path or score is read from its index (the
    writer's, in memory, while fitting on the writing process; a read-only view elsewhere).
    """

    session: Session

    # -- ModelCheckpoint -------------------------------------------------------------------------
    @property
    def dirpath(self) -> str:
        """The run directory (local path or URL), where the step directories are."""
        return self.session.directory

    @property
    def best_model_path(self) -> str:
        """The best checkpoint's step directory; ``""`` while the run has none."""
        best = self.session.ranked()[0]
        return "" if best is None else best.path

    @best_model_path.setter
    def best_model_path(self, value: str) -> None:
        # Lightning's spawn launcher hands the worker's value back to the main process; both
        # read the same run directory, so there is nothing to keep.
        pass

    @property
    def best_model_score(self) -> torch.Tensor | None:
        """The monitored value of the best checkpoint, as a tensor; None while there is none."""
        best = self.session.ranked()[0]
        return None if best is None else self._score(best.metrics)

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        """The ``keep_best`` best checkpoints (step directory -> monitored value), best first."""
        return {info.path: self._score(info.metrics) for info in self.session.ranked()[1]}

    @property
    def last_model_path(self) -> str:
        """The latest checkpoint's step directory; ``""`` while the run has none."""
        latest = self.session.ranked()[2]
        return "" if latest is None else latest.path

    # -- EarlyStopping ---------------------------------------------------------------------------
    @property
    def monitor(self) -> str:
        """The monitored metric's name."""
        return self.session.stopper.monitor.key

    @property
    def mode(self) -> str:
        """``"min"`` or ``"max"``."""
        return self.session.stopper.monitor.mode

    @property
    def patience(self) -> float:
        """Evaluations without improvement before stopping."""
        return self.session.stopper.patience

    @property
    def wait_count(self) -> int:
        """Evaluations since the last improvement."""
        return self.session.stopper.wait

    @property
    def best_score(self) -> torch.Tensor:
        """The best monitored value so far (``inf``/``-inf`` before the first), as a tensor."""
        return torch.tensor(self.session.stopper.best)

    def _score(self, metrics: dict[str, float]) -> torch.Tensor:
        return torch.tensor(self.session.stopper.monitor.value(metrics))


def lightning_checkpoint(session: Session, path: Any) -> dict[str, Any] | None:
    """The step directory ``path`` of the session's run as a weights-only Lightning checkpoint
    (``state_dict``, ``epoch``, ``global_step``, version); None when it is none of the run's."""
    wanted = os.fspath(path).rstrip("/")
    with session.reading() as manager:
        for info in manager.checkpoints():
            if info.path == wanted:
                model = manager.restore(info.step, keys=["model"])["model"]
                return {
                    "state_dict": model,
                    "epoch": info.metadata.get("epoch", 0),
                    "global_step": info.metadata.get("global_step", 0),
                    "pytorch-lightning_version": importlib.metadata.version("lightning"),
                }
    return None


class StepDirectoryIO(CheckpointIO):
    """A ``CheckpointIO`` that loads the step directories of one run and hands every other
    call to the ``CheckpointIO`` it wraps."""

    def __init__(self, inner: CheckpointIO, session: Session) -> None:
        self.inner = inner
        self.session = session

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        loaded = lightning_checkpoint(self.session, path)
        if loaded is None:
            return self.inner.load_checkpoint(path, *args, **kwargs)
        return loaded

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


def install_io(strategy: Any, session: Session) -> StepDirectoryIO:
    """Wraps the strategy's ``CheckpointIO`` in a :class:`StepDirectoryIO` for the run."""
    io = StepDirectoryIO(strategy.checkpoint_io, session)
    strategy.checkpoint_io = io
    return io


def remove_io(strategy: Any, io: StepDirectoryIO | None) -> None:
    """Takes ``io`` out of the strategy's chain of ``CheckpointIO`` wrappers, wherever it is."""
    outer: StepDirectoryIO | None = None
    current = strategy.checkpoint_io
    while isinstance(current, StepDirectoryIO):
        if current is io:
            if outer is None:
                strategy.checkpoint_io = io.inner
            else:
                outer.inner = io.inner
            return
        outer, current = current, current.inner


def warn_two_checkpointers(callback: LightningParity, trainer: Any) -> bool:
    """Warns when Lightning's ``ModelCheckpoint`` saves too, saying what ``ckpt_path="best"``
    means; only the first highmark callback of the trainer warns. Returns whether it warned."""
    ours = [c for c in trainer.checkpoint_callbacks if isinstance(c, LightningParity)]
    theirs = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    if not theirs or ours[0] is not callback:
        return False
    first = trainer.checkpoint_callback
    means = (
        f"the best step directory of highmark's run {first.dirpath}"
        if isinstance(first, LightningParity)
        else "the best .ckpt file of Lightning's ModelCheckpoint"
    )
    rank_zero_warn(
        f"two checkpointers run: highmark's callback ({callback.dirpath}) and Lightning's "
        f'ModelCheckpoint; ckpt_path="best" means {means}, the first checkpoint callback in '
        "Trainer(callbacks=...). Drop the ModelCheckpoint to save once, or list first the one "
        'whose best "best" should mean.'
    )
    return True
