"""A real highmark Run on scikit-learn's digits, paced by its parent: one epoch per stdin line.

``python paced_digits.py RUN_DIR``: before each epoch it prints ``ready EPOCH`` and waits for a
line on stdin, so a test decides when the next evaluation happens (no sleeping on either side).
``min_delta=0.3`` with patience 2 makes the run stop early within a few epochs, whatever the
exact losses. It prints ``done STATUS`` at the end.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from highmark.cli.demo import build_data, build_model
from highmark.run.core import Run


def main(out: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, x_val, y_val = build_data(0)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    with Run(out, monitor="val_loss", mode="min", patience=2, min_delta=0.3, keep_best=2,
             keep_last=1) as run:  # fmt: skip
        run.track(model=model, optimizer=optimizer)
        for epoch in run.epochs(30):
            print(f"ready {epoch}", flush=True)
            if not sys.stdin.readline():
                return  # the parent went away
            model.train()
            for i in range(0, len(x_train), 64):
                optimizer.zero_grad()
                loss = loss_fn(model(x_train[i : i + 64]), y_train[i : i + 64])
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_loss = loss_fn(model(x_val), y_val).item()
            run.report(val_loss=val_loss, train_loss=loss.item(), lr=1e-3)
    print(f"done {run.status}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
