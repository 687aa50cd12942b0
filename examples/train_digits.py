"""Train an MLP on scikit-learn's digits with a plain PyTorch loop driven by highmark.Run.

    python examples/train_digits.py --out runs/digits --max-epochs 100

Early stopping on the validation loss, the 3 best checkpoints and the latest kept, the best
weights loaded at the end. Run it again with the same --out and it resumes (or, if it had
already stopped, does nothing and says so).
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
    parser.add_argument("--out", default="runs/digits")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # a model this small is fastest on one thread

    # Data: 1,797 8x8 images, split 80/20 into training and validation.
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    val, train = order[: len(x) // 5], order[len(x) // 5 :]
    train_data = DataLoader(
        TensorDataset(x[train], y[train]),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),  # a seeded order resumes exactly
    )

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()

    with highmark.Run(args.out, monitor="val_loss", mode="min", patience=5, keep_best=3) as run:
        run.track(model=model, optimizer=optimizer, scheduler=scheduler)
        batches = run.loader(train_data)
        for epoch in run.epochs(max_epochs=args.max_epochs):
            model.train()
            for xb, yb in batches:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                logits = model(x[val])
                val_loss = loss_fn(logits, y[val]).item()
                val_acc = (logits.argmax(1) == y[val]).float().mean().item()
            run.report(val_loss=val_loss, val_acc=val_acc, train_loss=loss.item())
            scheduler.step()  # after report is fine: the checkpoint is taken at the epoch's end
            print(f"epoch {epoch}: val_loss {val_loss:.4f}  val_acc {val_acc:.3f}", flush=True)
    print(run.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
