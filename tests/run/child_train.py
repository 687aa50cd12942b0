"""A real training script run as a child process by the signal and kill-and-resume tests.

A dropout MLP on scikit-learn's digits, shuffled by a seeded DataLoader generator, driven by
``highmark.Run`` with a resumable loader. It prints one line per batch (``batch E I``) and per
evaluation (``reported E``); with ``--log-saves`` the Run's "saving" debug lines go to stdout too,
so a parent can choose kill points from the output. At the end it writes the final weights to
``--out`` and prints ``done BEST_STEP STOP_STEP EPOCHS``.

``--gate E,I`` makes the child wait for a line on stdin after printing ``batch E I``, so a parent
can deliver a signal at an exact point.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--log-saves", action="store_true")
    parser.add_argument("--gate", default=None)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import save_file
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from highmark.cli.demo import build_data, build_model
    from highmark.run.core import Run

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.log_saves:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("log %(message)s"))
        run_logger = logging.getLogger("highmark.run.core")
        run_logger.setLevel(logging.DEBUG)
        run_logger.addHandler(handler)
        run_logger.propagate = False
    gate = tuple(int(v) for v in args.gate.split(",")) if args.gate else None

    torch.manual_seed(args.seed)
    x_train, y_train, x_val, y_val = build_data(args.seed)
    x_train, y_train = x_train[: args.samples], y_train[: args.samples]
    model = build_model(hidden=64, dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.9)
    loss_fn = nn.CrossEntropyLoss()
    data = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=50,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    with Run(
        args.dir,
        patience=args.patience,
        keep_best=2,
        keep_last=1,
        async_save=not args.sync,
        restore_best=False,
    ) as run:
        run.track(model=model, optimizer=optimizer, scheduler=scheduler)
        batches = run.loader(data)
        for epoch in run.epochs(args.max_epochs):
            model.train()
            for xb, yb in batches:
                i = batches.consumed - 1  # counts the batches skipped after a mid-epoch resume
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
                print(f"batch {epoch} {i}", flush=True)
                if gate == (epoch, i):
                    sys.stdin.readline()
            model.eval()
            with torch.no_grad():
                val_loss = loss_fn(model(x_val), y_val).item()
            run.report(val_loss=val_loss)
            scheduler.step()
            print(f"reported {epoch}", flush=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"done {run.best_step} {run.stopping.stopped_step} {run.epoch}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
