"""Figure 3b: the slowdown of a real training loop that checkpoints every epoch.

The scikit-learn digits MLP (64 inputs, 10 classes), widened so that the model + Adam state
reaches the chosen size, trains on the real digits data with one torch thread. The number of
minibatches per epoch is calibrated so that one epoch takes about as long as one synchronous
save. Each round trains ``EPOCHS`` epochs under each mode (no checkpointing, a synchronous save
per epoch, an async save per epoch), in shuffled order; the async mode ends with ``wait()`` so
that the last write is paid for too.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from benchmarks import methods
from benchmarks.harness import Context, interleaved, progress, remove, row, summarize, timed
from benchmarks.state import tensors_of

EPOCHS = 4
BATCH = 64


class DigitsMLP(nn.Module):
    """The digits classifier: 64 -> width -> width -> 10."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class Trainer:
    """The model, optimizer and data of the loop; ``epoch()`` trains ``batches`` minibatches."""

    def __init__(self, nbytes: int, seed: int) -> None:
        torch.manual_seed(seed)
        # params ~ width^2 + 76 width; model + Adam moments = 12 bytes per parameter
        width = max(16, int((-76 + math.sqrt(76 * 76 + 4 * nbytes / 12)) / 2))
        self.model = DigitsMLP(width)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        digits = load_digits()
        self.x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
        self.y = torch.tensor(digits.target, dtype=torch.long)
        self.batches = 1
        self.cursor = 0
        self.width = width
        self.epoch()  # creates the Adam state

    def state(self) -> dict[str, Any]:
        """The state a checkpoint holds."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def epoch(self) -> float:
        """Trains one epoch; returns the last loss."""
        loss = torch.zeros(())
        for _ in range(self.batches):
            idx = torch.arange(self.cursor, self.cursor + BATCH) % len(self.x)
            self.cursor = (self.cursor + BATCH) % len(self.x)
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
        return float(loss.detach())


def run(ctx: Context) -> dict[str, Any]:
    """Measures the loop with and without checkpointing; returns figure ``training``."""
    missing = methods.highmark_missing()
    title = "Figure 3b - training-loop slowdown, checkpoint every epoch"
    if missing is not None:
        return {"training": {"title": title, "rows": [], "skipped": missing}}
    trainer = Trainer(ctx.nbytes, ctx.seed)
    nbytes = sum(t.nbytes for t in tensors_of(trainer.state()))
    work = ctx.workdir("training")
    sync = methods.hm_manager(os.path.join(work, "sync"))
    asy = methods.hm_manager(os.path.join(work, "async"), async_save=True)
    deferred = methods.hm_manager(os.path.join(work, "deferred"), async_save="deferred")
    # What a Run installs for async_save="deferred": the optimizer step waits for the copy.
    from highmark.state.torch import fence_hooks

    fences = fence_hooks(deferred.fence, [trainer.model, trainer.optimizer])
    step = {"n": 0}

    # calibrate: one epoch (of `batches` minibatches) ~ one synchronous save
    saves = []
    for _ in range(3):
        step["n"] += 1
        saves.append(timed(lambda: sync.save(step["n"], trainer.state())))
    batch_s = min(timed(trainer.epoch) for _ in range(3))
    trainer.batches = max(1, round(min(saves) / batch_s))
    progress(
        f"training: width {trainer.width}, state {nbytes / 1e6:.1f} MB, save {min(saves):.3f} s, "
        f"{trainer.batches} minibatches per epoch"
    )

    def loop(manager: Any) -> float:
        def go() -> None:
            for _ in range(EPOCHS):
                trainer.epoch()
                if manager is not None:
                    step["n"] += 1
                    manager.save(step["n"], trainer.state())
            if manager is not None:
                manager.wait()

        return timed(go) / EPOCHS

    cases = {
        "no checkpoint": lambda: loop(None),
        "highmark sync save every epoch": lambda: loop(sync),
        "highmark async save every epoch": lambda: loop(asy),
        "highmark deferred async save every epoch": lambda: loop(deferred),
    }
    res = interleaved(cases, ctx.repeat, label="training", seed=ctx.seed)
    for handle in fences:
        handle.remove()
    for manager in (sync, asy, deferred):
        manager.close()
    remove(work)
    base = res["no checkpoint"]
    rows = [
        row(
            name,
            s,
            unit="s/epoch",
            slowdown_median=round(s["median"] / base["median"] - 1, 3),
            slowdown_best=round(s["min"] / base["min"] - 1, 3),
        )
        for name, s in res.items()
    ]
    return {
        "training": {
            "title": title,
            "rows": rows,
            "setup": {
                "width": trainer.width,
                "state_bytes": nbytes,
                "minibatches_per_epoch": trainer.batches,
                "batch": BATCH,
                "epochs_per_round": EPOCHS,
                "sync_save_s_at_calibration": summarize(saves),
            },
        }
    }
