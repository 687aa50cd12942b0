"""Lightning + highmark: an MLP on scikit-learn's digits, stopped by policy, best weights kept.

    python examples/lightning_digits.py --out runs/lightning-digits
    python examples/lightning_digits.py --out runs/lightning-digits --devices 2  # DDP, gloo
    highmark ls runs/lightning-digits

Run it again with a larger ``--max-epochs`` to resume the run where it stopped or ran out of budget.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from highmark.integrations.lightning import HighmarkCallback


def digits_loaders(
    n_train: int = 100, batch_size: int = 64, shuffle: bool = False
) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    """Train and validation loaders over scikit-learn's digits (a small train split overfits)."""
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(xt), generator=gen)
    train, val = order[:n_train], order[n_train:]
    train_ds = TensorDataset(xt[train], yt[train])
    val_ds = TensorDataset(xt[val], yt[val])
    return (
        DataLoader(train_ds, batch_size=batch_size, shuffle=shuffle, num_workers=0),
        DataLoader(val_ds, batch_size=512, num_workers=0),
    )


class DigitsMLP(pl.LightningModule):
    """A two-layer MLP for 8x8 digits, SGD with momentum and a step LR schedule."""

    def __init__(self, hidden: int = 128, lr: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self) -> dict[str, object]:
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": sched}


def make_trainer(max_epochs: int, callbacks: list[pl.Callback], **kwargs: object) -> pl.Trainer:
    """A quiet CPU trainer: no logger, no progress bar, and no Lightning checkpoints (the
    highmark callback is the trainer's checkpoint callback; without one none is added)."""
    checkpointing = any(isinstance(c, pl.callbacks.Checkpoint) for c in callbacks)
    options: dict[str, object] = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": checkpointing,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks,
    }
    options.update(kwargs)
    return pl.Trainer(**options)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lightning-digits")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--result", default=None, help="write each rank's outcome as JSON here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*small number of batches.*")

    pl.seed_everything(0, verbose=False)
    model = DigitsMLP()
    train, val = digits_loaders()
    callback = HighmarkCallback(args.out, monitor="val_loss", patience=args.patience, keep_best=2)
    extra: dict[str, object] = {}
    if args.devices > 1:
        extra = {"devices": args.devices, "strategy": "ddp"}
    trainer = make_trainer(args.max_epochs, [callback], **extra)
    trainer.fit(model, train, val)

    es = callback.stopper
    outcome = {
        "rank": trainer.global_rank,
        "epochs": trainer.current_epoch,
        "stopped_step": es.stopped_step,
        "best_step": callback.best_step,
        "best": es.best,
        "reason": es.reason,
        "weights_sum": float(sum(p.detach().double().sum() for p in model.parameters())),
    }
    if args.result:
        path = f"{args.result}.rank{trainer.global_rank}.json"
        with open(path, "w") as fh:
            json.dump(outcome, fh)
    if trainer.is_global_zero:
        print(f"stopped at epoch {es.stopped_step} ({es.reason}); best epoch {callback.best_step}")
        print(f"inspect: highmark ls {os.fspath(args.out)}")
    return outcome


if __name__ == "__main__":
    main()
