"""What the Lightning tests share: the digits example, a seeded fit and the warnings allowed."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from .conftest import load_example

WARNINGS = [
    # Lightning's advice for tiny CPU loaders (worker count, batch count) is not our concern.
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*small number of batches.*"),
    pytest.mark.filterwarnings("ignore:.*Checkpoint directory.*exists and is not empty.*"),
    # Lightning 2.6 uses torch.utils._pytree.LeafSpec, which torch 2.13 deprecates.
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]

ex = load_example("lightning_digits")


def fit(
    callbacks: list[pl.Callback],
    max_epochs: int,
    ckpt_path: str | None = None,
    model: pl.LightningModule | None = None,
    **kwargs: Any,
) -> tuple[Any, pl.Trainer]:
    """Fits a seeded digits MLP (or ``model``) on the digits loaders; returns it and the trainer."""
    pl.seed_everything(0, verbose=False)
    model = ex.DigitsMLP() if model is None else model
    train, val = ex.digits_loaders()
    trainer = ex.make_trainer(max_epochs, callbacks, **kwargs)
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return model, trainer


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
