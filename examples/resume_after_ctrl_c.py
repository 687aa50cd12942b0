"""Press Ctrl-C during training, run the script again: it continues exactly where it stopped.

    python examples/resume_after_ctrl_c.py --out runs/ctrl-c
    # ... press Ctrl-C: the run saves a checkpoint at the next batch and exits (status 130)
    python examples/resume_after_ctrl_c.py --out runs/ctrl-c
    # ... resumes mid-epoch: the loader skips the batches already seen, RNG states are restored

SIGTERM and SIGUSR1 (sent by schedulers before preemption) behave the same way. A second
Ctrl-C while the save is pending aborts at once.
"""

from __future__ import annotations

import argparse
import logging

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import highmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ctrl-c")
    parser.add_argument("--max-epochs", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(1)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    data = DataLoader(
        TensorDataset(x[:1400], y[:1400]),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    with highmark.Run(args.out, patience=5) as run:
        run.track(model=model, optimizer=optimizer)
        batches = run.loader(data)  # records how many batches of the epoch were consumed
        for epoch in run.epochs(args.max_epochs):
            model.train()
            for xb, yb in batches:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
                print(f"epoch {epoch} batch {batches.consumed}", flush=True)
            model.eval()
            with torch.no_grad():
                val_loss = loss_fn(model(x[1400:]), y[1400:]).item()
            run.report(val_loss=val_loss)
    print(run.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
