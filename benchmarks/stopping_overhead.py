"""Figure 5: the cost of one early-stopping update, highmark vs Keras 3 vs Lightning.

When ``benchmarks/bench_stopping.py`` (written with the stopping policy) is present, its
``run(repeat)`` provides the figure (best of ``repeat`` passes per stopper). Otherwise the three
callbacks are driven here with the same noisy, decreasing validation-loss curve and a patience so
long that none of them stops: Keras' ``EarlyStopping.on_epoch_end(epoch, logs)``, Lightning's
``EarlyStopping`` check on a minimal trainer stand-in whose ``callback_metrics`` hold tensors (as
a real trainer's do), and ``highmark.EarlyStopping.update(metrics)``.
"""

from __future__ import annotations

import importlib
import os
import random
import types
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, interleaved, progress, row, timed

UPDATES = 20_000

#: bench_stopping.run's keys -> the row names of this figure
_EXTERNAL = {
    "highmark_patience_us": "highmark EarlyStopping.update",
    "highmark_all_criteria_us": "highmark EarlyStopping.update, all criteria on",
    "keras_us": "Keras 3 EarlyStopping.on_epoch_end",
    "lightning_us": "Lightning EarlyStopping._evaluate_stopping_criteria",
}


def curve(n: int, seed: int) -> list[float]:
    """A noisy, slowly decreasing validation loss."""
    rng = random.Random(seed)
    return [1.0 / (1.0 + 0.01 * i) + rng.gauss(0.0, 0.01) for i in range(n)]


def keras_driver(values: list[float]) -> Callable[[], None]:
    """Drives Keras 3's EarlyStopping through the values, as ``fit`` would per epoch."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.callbacks import EarlyStopping

    logs = [{"val_loss": v} for v in values]

    def go() -> None:
        cb = EarlyStopping(monitor="val_loss", mode="min", patience=len(values) + 1)
        cb.set_model(types.SimpleNamespace(stop_training=False))
        cb.on_train_begin()
        for epoch, log in enumerate(logs):
            cb.on_epoch_end(epoch, log)

    return go


def lightning_driver(values: list[float]) -> Callable[[], None]:
    """Drives Lightning's EarlyStopping check with tensor metrics, as the trainer would."""
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    metrics = [{"val_loss": torch.tensor(v)} for v in values]
    strategy = types.SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)

    def go() -> None:
        cb = EarlyStopping(monitor="val_loss", mode="min", patience=len(values) + 1)
        trainer = types.SimpleNamespace(
            callback_metrics={},
            fast_dev_run=False,
            should_stop=False,
            current_epoch=0,
            strategy=strategy,
        )
        for epoch, m in enumerate(metrics):
            trainer.callback_metrics = m
            trainer.current_epoch = epoch
            cb._run_early_stopping_check(trainer)  # type: ignore[arg-type]  # a stand-in

    return go


def highmark_driver(values: list[float]) -> Callable[[], None]:
    """Drives highmark's EarlyStopping (patience only) with the values."""
    from highmark import EarlyStopping

    logs = [{"val_loss": v} for v in values]

    def go() -> None:
        es = EarlyStopping(monitor="val_loss", mode="min", patience=len(values) + 1)
        for log in logs:
            es.update(log)

    return go


def run(ctx: Context) -> dict[str, Any]:
    """Measures the stoppers; returns figure ``stopping``."""
    title = "Figure 5 - stopping overhead per update()"
    try:
        external = importlib.import_module("benchmarks.bench_stopping")
    except ImportError:
        external = None
    if external is not None and hasattr(external, "run"):
        progress("stopping: using benchmarks/bench_stopping.run")
        result = external.run(max(ctx.repeat, 3))
        rows = [
            row(label, {"min": result[key]}, unit="us/update (best of runs)")
            for key, label in _EXTERNAL.items()
            if result.get(key) is not None
        ]
        return {
            "stopping": {
                "title": title,
                "source": "benchmarks/bench_stopping.py",
                "rows": rows,
                "result": result,
            }
        }
    values = curve(UPDATES, ctx.seed)
    drivers: dict[str, Callable[[], None]] = {}
    skipped = []
    for name, make in (
        ("highmark EarlyStopping.update", highmark_driver),
        ("Keras 3 EarlyStopping.on_epoch_end", keras_driver),
        ("Lightning EarlyStopping check", lightning_driver),
    ):
        try:
            drivers[name] = make(values)
        except (ImportError, AttributeError) as exc:
            skipped.append(f"{name}: {exc}")
    cases = {name: (lambda go=go: timed(go) / UPDATES * 1e6) for name, go in drivers.items()}
    res = interleaved(cases, ctx.repeat, label="stopping", seed=ctx.seed)
    figure: dict[str, Any] = {
        "title": title,
        "source": "benchmarks/stopping_overhead.py (bench_stopping.py not present)",
        "rows": [row(name, s, unit="us/update") for name, s in res.items()],
        "updates_per_sample": UPDATES,
    }
    if skipped:
        figure["skipped"] = "; ".join(skipped)
    return {"stopping": figure}
