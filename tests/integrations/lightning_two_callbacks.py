"""Two highmark callbacks (val_loss and val_acc, two directories) in one Lightning fit.

Run by tests/integrations/test_lightning_several.py, also as ``--devices 2`` (DDP, gloo, CPU):

    python tests/integrations/lightning_two_callbacks.py OUT RESULT --devices 2

Each rank writes RESULT.rank<r>.json: each callback's stop and best step, the epochs run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import lightning.pytorch as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import lightning_digits as ex
from highmark.integrations.lightning import HighmarkCallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("result")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    pl.seed_everything(0, verbose=False)
    model = ex.DigitsMLP()
    train, val = ex.digits_loaders()
    loss = HighmarkCallback(os.path.join(args.out, "loss"), monitor="val_loss", patience=2)
    acc = HighmarkCallback(os.path.join(args.out, "acc"), monitor="val_acc", mode="max", patience=2)
    extra: dict[str, object] = {}
    if args.devices > 1:
        extra = {"devices": args.devices, "strategy": "ddp"}
    trainer = ex.make_trainer(40, [loss, acc], **extra)
    trainer.fit(model, train, val)
    outcome = {
        "epochs": trainer.current_epoch,
        "callbacks": [
            {"stopped": cb.stopper.stopped_step, "best": cb.best_step, "key": cb.state_key}
            for cb in (loss, acc)
        ],
    }
    with open(f"{args.result}.rank{trainer.global_rank}.json", "w") as fh:
        json.dump(outcome, fh)


if __name__ == "__main__":
    main()
