"""Optuna + highmark: tune a digits MLP; trials stop by a highmark policy; keep each trial's best.

    python examples/optuna_digits.py --out runs/optuna-digits --pruner highmark
    python examples/optuna_digits.py --out runs/optuna-median --pruner median   # to compare
    highmark ls runs/optuna-digits/trial-00000

Each trial writes an ordinary highmark run under ``--out`` (one directory per trial); at the end
``best_checkpoint`` loads the best model of the best trial.
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Any

import optuna
import torch
from sklearn.datasets import load_digits
from torch import nn

from highmark.integrations.optuna import HighmarkPruner, best_checkpoint, trial_directory
from highmark.store.manager import CheckpointManager


@functools.lru_cache(maxsize=1)
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train/validation tensors from scikit-learn's digits (fixed split)."""
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))
    train, val = order[:600], order[600:]
    return xt[train], yt[train], xt[val], yt[val]


def make_model(hidden: int) -> nn.Module:
    """The MLP being tuned."""
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def val_loss(model: nn.Module) -> float:
    """Cross-entropy of ``model`` on the validation split."""
    _, _, xv, yv = digits_tensors()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(xv), yv))


def objective(trial: optuna.Trial, root: str, max_epochs: int) -> float:
    """Trains one configuration, saving each epoch into the trial's highmark run."""
    lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
    hidden = trial.suggest_int("hidden", 8, 128, log=True)
    torch.manual_seed(trial.number)
    model = make_model(hidden)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y, _, _ = digits_tensors()
    gen = torch.Generator().manual_seed(trial.number)
    best = math.inf
    directory = trial_directory(root, trial)
    with CheckpointManager(directory, monitor="val_loss", keep_best=1, keep_last=1) as ckpt:
        for epoch in range(max_epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                batch = order[i : i + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
            value = val_loss(model)
            best = min(best, value) if math.isfinite(value) else best
            ckpt.save(epoch, {"model": model.state_dict()}, metrics={"val_loss": value})
            trial.set_user_attr("epochs", epoch + 1)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return best


def run_study(
    pruner: optuna.pruners.BasePruner, root: str, n_trials: int = 20, max_epochs: int = 15
) -> optuna.Study:
    """One study with a fixed sampler seed; trial runs go under ``root``."""
    torch.set_num_threads(1)  # a tiny MLP: more threads only fight over the cores
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", pruner=pruner, sampler=optuna.samplers.TPESampler(seed=0)
    )
    study.optimize(lambda t: objective(t, root, max_epochs), n_trials=n_trials)
    return study


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Epochs spent over all trials, trials pruned, best value of a completed trial."""
    trials = study.trials
    return {
        "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "best_value": study.best_value,
    }


PRUNERS = {
    "highmark": lambda: HighmarkPruner(patience=3),
    "highmark+median": lambda: HighmarkPruner(
        patience=3, combine_with=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    ),
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    "none": lambda: optuna.pruners.NopPruner(),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/optuna-digits")
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default="highmark")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=15)
    args = parser.parse_args(argv)

    study = run_study(PRUNERS[args.pruner](), args.out, args.trials, args.max_epochs)
    summary = summarize(study)
    state = best_checkpoint(study, args.out, monitor="val_loss")
    model = make_model(study.best_params["hidden"])
    model.load_state_dict(state["model"])
    print(f"{args.pruner}: {summary}; best params {study.best_params}")
    print(f"best model reloaded: val_loss {val_loss(model):.4f}")
    return summary


if __name__ == "__main__":
    main()
