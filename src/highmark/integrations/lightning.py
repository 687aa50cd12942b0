"""PyTorch Lightning callback: highmark early stopping and checkpointing in one object.

``HighmarkCallback`` replaces Lightning's ``EarlyStopping`` and ``ModelCheckpoint``::

    from highmark.integrations.lightning import HighmarkCallback

    trainer = lightning.Trainer(max_epochs=100, callbacks=[HighmarkCallback("runs/mlp")])
    trainer.fit(model, train_loader, val_loader)   # stops by policy, ends on the best weights

To Lightning it is both: a ``Checkpoint`` (``trainer.checkpoint_callback``; Lightning adds no
``ModelCheckpoint`` of its own and refuses ``enable_checkpointing=False``) and an ``EarlyStopping``
(``trainer.early_stopping_callback``), so it runs after the module's own epoch-end hooks and sees
what they log. Under DDP every rank runs the policy on its own metrics and the stop decision is
reduced over the ranks (one rank stopping stops all, as in Lightning); only rank 0 writes to the
run directory.
"""

from __future__ import annotations

from typing import Any

from highmark.integrations._common import (
    CallbackBase,
    CallbackSettings,
    make_stopper,
    require,
    scalar_metrics,
)

require("lightning", "2.2", "lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import Checkpoint  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping  # noqa: E402
from lightning.pytorch.trainer.states import TrainerFn  # noqa: E402

from highmark.integrations._lightning_parity import (  # noqa: E402
    LightningParity,
    StepDirectoryIO,
    install_io,
    remove_io,
    warn_two_checkpointers,
)

__all__ = ["HighmarkCallback"]


class HighmarkCallback(  # type: ignore[misc, override]  # read-only EarlyStopping attributes
    LightningParity, CallbackBase, LightningEarlyStopping, Checkpoint
):
    """A Lightning callback that stops training by a highmark policy and keeps the right models.

    Takes the arguments of every ``HighmarkCallback`` (:class:`~highmark.integrations._common.
    CallbackBase`: Run's, with Run's defaults). For Lightning:

    * ``monitor`` is a logged metric (``self.log("val_loss", ...)``); ``mode="auto"`` reads the
      direction from its name (a name that says neither is refused).
    * ``async_save="deferred"``: the trainer's optimizers wait for the save's copy before their
      next step, and the module, when it holds buffers, before its next forward pass. Another
      callback that changes the weights in place between a save and the next step (an EMA or
      weight-averaging callback) must call ``callback.session.manager.fence()`` first, or that
      save is dropped with ``highmark.errors.StateChangedError``.
    * ``resume`` continues from the run directory's latest checkpoint (model, optimizers,
      schedulers, loop progress and the stopper) when ``fit`` is called without ``ckpt_path``.
    * ``check_on_train_epoch_end`` (its own keyword argument): as in Lightning's
      ``EarlyStopping``; ``None`` checks at the end of the training epoch when validation runs
      once per epoch, else after validation.

    Besides :attr:`best_step` and :attr:`stopper`, it has the attributes of Lightning's
    ``ModelCheckpoint`` and ``EarlyStopping`` (see :class:`LightningParity`); its paths are step
    directories, which ``trainer.validate/test/predict(ckpt_path="best")`` loads through the
    callback. Its :attr:`state_key` holds the monitor, mode and directory, so several may run in
    one trainer.
    """

    framework_options = ("check_on_train_epoch_end",)

    def _configure(self, settings: CallbackSettings, **own: Any) -> None:
        # Lightning's EarlyStopping.__init__ is not run: its attributes read the policy instead.
        stopper = make_stopper(
            settings.monitor, settings.mode, settings.patience, settings.stopping, settings.options
        )
        self.session = settings.session("lightning", "epoch", stopper)
        self._check_on_train_epoch_end: bool | None = own.get("check_on_train_epoch_end")
        self._loaded_by_lightning = False
        self._history_records = -1
        self._ended = True  # the end of fit (best weights, run record) is done
        self._io: StepDirectoryIO | None = None
        self._warned = False
        self.best_step: int | None = None
        self.stopped_epoch = 0  # as in Lightning's EarlyStopping: the epoch it stopped at, or 0

    @property
    def state_key(self) -> str:
        """The key of its state in a Lightning checkpoint: unique per monitor, mode, directory."""
        return str(
            self._generate_state_key(monitor=self.monitor, mode=self.mode, directory=self.dirpath)
        )

    # -- Lightning's own checkpoint carries the stopper ----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "stopper": self.stopper.state_dict(),
            "directory": self.session.directory,
            "history_records": self.session.records,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopper.load_state_dict(state_dict["stopper"])
        self._history_records = int(state_dict.get("history_records", -1))
        self.stopped_epoch = int(state_dict.get("stopped_epoch", 0))
        self._loaded_by_lightning = True

    # -- lifecycle -------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:  # validate/test/predict may load a step directory
            remove_io(trainer.strategy, self._io)
            self._io = install_io(trainer.strategy, self.session)
            return
        if self._check_on_train_epoch_end is None:
            self._check_on_train_epoch_end = (
                trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1
            )
        self.session.unit = "epoch" if self._check_on_train_epoch_end else "step"
        self.session.budget = trainer.max_epochs if self._check_on_train_epoch_end else None
        if not self._warned:
            self._warned = warn_two_checkpointers(self, trainer)
        if trainer.is_global_zero:
            self.session.open()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = False
        self.session.install_fences([pl_module, *trainer.optimizers])  # deferred async saves only
        if self._loaded_by_lightning:
            # trainer.fit(ckpt_path=...) restores everything, the stopper included
            if self._history_records >= 0:
                self.session.history_to(self._history_records)
            return
        resumed = self.session.resume_state()
        if resumed is None:
            return
        _, state = resumed
        pl_module.load_state_dict(state["model"])
        for optimizer, saved in zip(trainer.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        schedulers = trainer.lr_scheduler_configs
        for config, saved in zip(schedulers, state["lr_schedulers"], strict=True):
            config.scheduler.load_state_dict(saved)
        trainer.fit_loop.load_state_dict(state["loops"])
        if self.stopper.should_stop:
            trainer.should_stop = True
            self.stopped_epoch = int(self.session.resumed_metadata.get("epoch", 0))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._check_on_train_epoch_end and not self._skip(trainer):
            self._evaluate(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._check_on_train_epoch_end and not self._skip(trainer):
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.session.restore_best:
            if self.session.manager is not None:
                self.session.manager.wait()
            trainer.strategy.barrier("highmark_restore_best")
        self.session.epochs_run = trainer.current_epoch
        self.session.steps_run = trainer.global_step
        self._end(pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips the training loop, on_train_end included, when a resumed run is
        # already done (stopped, or out of epochs): it ends here, on the same weights.
        if not self._ended:
            self._end(pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed"
        self._ended = True
        remove_io(trainer.strategy, self._io)
        self._io = None
        try:
            if self.session.restore_best and trainer.world_size == 1:
                self._restore_best(pl_module)
        finally:
            self.session.close(status)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        remove_io(trainer.strategy, self._io)
        self._io = None
        self._loaded_by_lightning = False  # a state loaded from a .ckpt served this stage only
        self.session.close("budget")

    # -- internals -------------------------------------------------------------------------------
    def _skip(self, trainer: pl.Trainer) -> bool:
        return bool(
            trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or getattr(trainer, "fast_dev_run", False)
        )

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = scalar_metrics(trainer.callback_metrics)
        epoch = trainer.current_epoch
        step = epoch if self._check_on_train_epoch_end else trainer.global_step
        stop = self.session.evaluate(step, metrics, epoch=epoch)
        # one rank stopping stops every rank, as Lightning's EarlyStopping does
        stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        trainer.should_stop = trainer.should_stop or stop
        if stop:
            self.stopped_epoch = epoch
        self.session.epochs_run = epoch + 1
        self.session.steps_run = trainer.global_step
        if trainer.is_global_zero:
            state = {
                "model": pl_module.state_dict(),
                "optimizers": [opt.state_dict() for opt in trainer.optimizers],
                "lr_schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
                "loops": trainer.fit_loop.state_dict(),
            }
            meta = {"epoch": epoch, "global_step": trainer.global_step}
            self.session.save(step, state, metrics, meta)

    def _end(self, pl_module: pl.LightningModule) -> None:
        self._ended = True
        if self.session.restore_best:
            self._restore_best(pl_module)
        self.session.close("budget")

    def _restore_best(self, pl_module: pl.LightningModule) -> None:
        best = self.session.load_best(pl_module.load_state_dict)
        if best is not None:
            self.best_step = best
