"""``replay`` on the files the frameworks really write: Lightning's CSVLogger, Keras' History."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from highmark.replay import replay
from highmark.replay.curves import load_curves
from highmark.replay.grid import parse_grid

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*small number of batches.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return x, (x @ torch.tensor([1.0, -2.0, 0.5, 3.0])).unsqueeze(1)


def test_lightning_csvlogger_metrics_are_merged_by_epoch(tmp_path: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    class Regressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):  # type: ignore[no-untyped-def]
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):  # type: ignore[no-untyped-def]
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.05)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(
        max_epochs=5, logger=CSVLogger(str(tmp_path)), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        log_every_n_steps=1,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(Regressor(), loader, loader)
    path = os.path.join(trainer.logger.log_dir, "metrics.csv")  # type: ignore[union-attr]
    with open(path) as f:
        raw = list(csv.DictReader(f))
    val = {int(r["epoch"]): float(r["val_loss"]) for r in raw if r.get("val_loss")}
    (curve,) = load_curves([path])
    assert curve.steps == [0, 1, 2, 3, 4]
    assert curve.series("val_loss") == ([0, 1, 2, 3, 4], [val[e] for e in range(5)])
    assert len(curve.series("train_loss")[0]) == 5  # the epoch's train row merged in
    result = replay([curve], parse_grid({"patience": "0..2"}))
    assert [p.curves[0].budget for p in result.policies] == [5, 5, 5]


def test_keras_history_json_replays_like_its_val_loss(tmp_path: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    x, y = (t.numpy() for t in _data())
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(x, y, validation_split=0.25, epochs=6, batch_size=16, verbose=0)
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history.history))
    (curve,) = load_curves([str(path)])
    losses = history.history["val_loss"]
    assert curve.series("val_loss") == (list(range(6)), [float(v) for v in losses])
    best = min(range(6), key=lambda i: losses[i])
    row = replay([curve], parse_grid({"patience": "10"})).policies[0].curves[0]
    assert (row.stopped, row.restore_step) == (False, best)
