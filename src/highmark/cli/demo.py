"""The digits demo: a small PyTorch MLP trained with early stopping and best-k checkpointing.

``highmark demo [--out DIR]`` runs :func:`main`. The data is scikit-learn's bundled digits (8x8
images of handwritten digits, 1,797 samples; nothing is downloaded), split into a training and a
validation set. Each epoch shows a progress bar with the validation loss, the best so far and the
patience left; the run stops when the validation loss stops improving, keeps the three best
checkpoints and the latest, and ends with the best weights loaded.

The demo always starts fresh: an earlier demo run in the same directory is removed first (a
directory holding anything else is left alone and the demo refuses to run there).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import Any

__all__ = ["build_data", "build_model", "main"]

_RUN_MARKERS = ("highmark.json", "run.json", "history.jsonl")


def build_data(seed: int = 0, val_fraction: float = 0.2) -> tuple[Any, Any, Any, Any]:
    """Loads scikit-learn's digits and splits it: ``(x_train, y_train, x_val, y_val)`` tensors."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def build_model(hidden: int = 128, dropout: float = 0.2) -> Any:
    """A two-hidden-layer MLP for 8x8 digits, with dropout."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden // 2),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden // 2, 10),
    )


def _prepare(out: str) -> str | None:
    """Removes an earlier demo run at ``out``; returns an error message when ``out`` is foreign."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        return f"{out} exists and is not a directory"
    entries = os.listdir(out)
    if not entries:
        return None
    if not any(marker in entries for marker in _RUN_MARKERS):
        return f"{out} is not empty and holds no highmark run; choose another --out"
    shutil.rmtree(out)
    return None


def main(
    out: str = "highmark-demo", max_epochs: int = 100, seed: int = 0, quiet: bool = False
) -> int:
    """Runs the demo; returns the process exit code.

    Args:
        out: the run directory (an earlier demo run there is replaced).
        max_epochs: the epoch budget; early stopping usually ends the run well before.
        seed: seeds the data split, the weights, dropout and the shuffling.
        quiet: no progress bars, no output (the summary is still logged).
    """
    import torch

    def say(text: str = "") -> None:
        if not quiet:
            print(text, flush=True)

    problem = _prepare(out)
    if problem is not None:
        print(f"highmark demo: {problem}", file=sys.stderr)
        return 2
    if not quiet and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    threads = torch.get_num_threads()
    # A model this small runs fastest on one thread; more only add synchronisation.
    torch.set_num_threads(1)
    try:
        return _train(out, max_epochs, seed, quiet, say, started)
    finally:
        torch.set_num_threads(threads)


def _train(out: str, max_epochs: int, seed: int, quiet: bool, say: Any, started: float) -> int:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm import tqdm

    from highmark.run.core import Run

    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = build_data(seed)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    train = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    say(
        f"highmark demo: an MLP on scikit-learn's digits ({len(x_train)} train / {len(x_val)} "
        f"validation images), early stopping on val_loss (patience 5), keeping the 3 best "
        f"checkpoints in {out}"
    )
    with Run(out, monitor="val_loss", mode="min", patience=5, keep_best=3, keep_last=1) as run:
        run.track(model=model, optimizer=optimizer)
        batches = run.loader(train)
        for epoch in run.epochs(max_epochs):
            model.train()
            bar = tqdm(
                total=len(batches),
                desc=f"epoch {epoch:>3}",
                disable=quiet,
                bar_format="{desc} {bar:16} {n_fmt}/{total_fmt} batches{postfix}",
                mininterval=0.5,
                file=sys.stdout,
            )
            for xb, yb in batches:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                bar.update(1)
            model.eval()
            with torch.no_grad():
                logits = model(x_val)
                val_loss = loss_fn(logits, y_val).item()
                val_acc = (logits.argmax(1) == y_val).float().mean().item()
            run.report(val_loss=val_loss, val_acc=val_acc, train_loss=loss.item())
            patience_left = max(int(run.stopping.patience) - run.stopping.wait, 0)
            bar.set_postfix_str(
                f"val_loss {val_loss:.4f} | best {run.best:.4f} (epoch {run.best_step}) | "
                f"patience left {patience_left}",
                refresh=False,
            )
            bar.close()
    summary = run.summary()
    logging.getLogger(__name__).info("%s", summary)
    with torch.no_grad():
        model.eval()
        acc = (model(x_val).argmax(1) == y_val).float().mean().item()
    say()
    say(summary)
    say()
    say(f"validation accuracy of the restored best model: {acc:.2%}")
    say(f"finished in {time.perf_counter() - started:.1f} s. Inspect the run with:")
    say(f"  highmark ls {out}")
    say(f"  highmark report {out} -o report.html")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
