"""Keras 3 + highmark: an MLP on scikit-learn's digits, stopped by policy, best weights kept.

    KERAS_BACKEND=torch python examples/keras_digits.py --out runs/keras-digits
    highmark ls runs/keras-digits

Run it again with a larger ``--epochs`` to resume the run after its last saved epoch.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
from sklearn.datasets import load_digits

from highmark.integrations.keras import HighmarkCallback


def digits_arrays(
    n_train: int = 100, n_val: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation arrays from scikit-learn's digits (a small train split overfits)."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    train, val = order[:n_train], order[n_train : n_train + n_val]
    return x[train], y[train], x[val], y[val]


def make_model(hidden: int = 128, lr: float = 0.3) -> keras.Model:
    """A compiled two-layer MLP (seeded by the caller through keras.utils.set_random_seed)."""
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main(argv: list[str] | None = None) -> HighmarkCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/keras-digits")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=5)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits_arrays()
    model = make_model()
    callback = HighmarkCallback(args.out, monitor="val_loss", patience=args.patience, keep_best=2)
    model.fit(
        x,
        y,
        validation_data=(xv, yv),
        epochs=args.epochs,
        batch_size=32,
        shuffle=False,
        callbacks=[callback],
        verbose=0,
    )
    es = callback.stopper
    print(f"stopped at epoch {es.stopped_step} ({es.reason}); best epoch {callback.best_epoch}")
    print(f"inspect: highmark ls {args.out}")
    return callback


if __name__ == "__main__":
    main()
