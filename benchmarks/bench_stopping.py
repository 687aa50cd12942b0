"""Cost of one early-stopping update: highmark vs Keras 3 and Lightning, fed the same values.

Run ``python benchmarks/bench_stopping.py [--repeat N]``. Each measurement feeds the same
``N_VALUES`` metric values through a fresh stopper and reports the per-update time, the minimum
over ``repeat`` runs (the least disturbed one, as ``timeit`` advises). Patience is set high so
that no stopper stops (a stopped stopper would answer for free). Keras is driven as ``fit`` does
(``on_epoch_end(epoch, logs)`` with a tiny real model attached); Lightning through
``_evaluate_stopping_criteria`` with the value already a tensor, as its hook passes it.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

N_VALUES = 2000


def _values() -> list[float]:
    rng = random.Random(0)
    return [1.0 + 0.5 * math.exp(-i / 300) + rng.gauss(0, 0.01) for i in range(N_VALUES)]


def _best_of(repeat: int, make: Callable[[], Callable[[], None]]) -> float:
    """Minimum seconds per update over ``repeat`` timed passes (setup outside the timing)."""
    best = math.inf
    for _ in range(repeat):
        loop = make()
        start = time.perf_counter()
        loop()
        best = min(best, (time.perf_counter() - start) / N_VALUES)
    return best


def _highmark(all_criteria: bool) -> Callable[[], Callable[[], None]]:
    from highmark import EarlyStopping
    from highmark.criteria import (
        AnyOf,
        GeneralizationLoss,
        MaxSteps,
        ProgressQuotient,
        SuccessiveIncreases,
        TimeBudget,
    )

    rows = [{"val_loss": v, "train_loss": v / 2, "acc": 0.5} for v in _values()]

    def make() -> Callable[[], None]:
        if all_criteria:
            es = EarlyStopping(
                patience=10**9,
                min_delta=1e-6,
                baseline=5.0,
                stopping_threshold=0.0,
                divergence_threshold=100.0,
                criteria=[
                    GeneralizationLoss(1e9),
                    ProgressQuotient(1e9, strip=5),
                    SuccessiveIncreases(10**6, strip=5),
                    AnyOf(TimeBudget(1e9), MaxSteps(10**9)),
                ],
            )
        else:
            es = EarlyStopping(patience=10**9)
        update = es.update

        def loop() -> None:
            for row in rows:
                if update(row):
                    raise AssertionError("highmark stopped during the benchmark")

        return loop

    return make


def _keras() -> Callable[[], Callable[[], None]]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    logs = [{"val_loss": v} for v in _values()]

    def make() -> Callable[[], None]:
        cb = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=10**9)
        cb.set_model(model)
        model.stop_training = False
        cb.on_train_begin()
        on_epoch_end = cb.on_epoch_end

        def loop() -> None:
            for epoch, log in enumerate(logs):
                on_epoch_end(epoch, log)
            if model.stop_training:
                raise AssertionError("keras stopped during the benchmark")

        return loop

    return make


def _lightning() -> Callable[[], Callable[[], None]]:
    import torch
    from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

    tensors = [torch.tensor(v) for v in _values()]

    def make() -> Callable[[], None]:
        cb = LightningEarlyStopping(monitor="val_loss", mode="min", patience=10**9)
        evaluate = cb._evaluate_stopping_criteria

        def loop() -> None:
            for t in tensors:
                if evaluate(t)[0]:
                    raise AssertionError("lightning stopped during the benchmark")

        return loop

    return make


def run(repeat: int = 7) -> dict[str, Any]:
    """Measures the per-update cost in microseconds; a missing reference library gives None."""
    results: dict[str, Any] = {"n_values": N_VALUES, "repeat": repeat}
    cases: dict[str, Callable[[], Callable[[], Callable[[], None]]]] = {
        "highmark_patience_us": lambda: _highmark(False),
        "highmark_all_criteria_us": lambda: _highmark(True),
        "keras_us": _keras,
        "lightning_us": _lightning,
    }
    for name, setup in cases.items():
        try:
            make = setup()
        except ImportError:
            results[name] = None
            continue
        results[name] = _best_of(repeat, make) * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed passes; the minimum counts")
    args = parser.parse_args()
    results = run(args.repeat)
    print(f"cost of one update(), min over {args.repeat} passes of {N_VALUES} updates")
    for name, label in [
        ("highmark_patience_us", "highmark, patience only"),
        ("highmark_all_criteria_us", "highmark, all criteria on"),
        ("keras_us", "Keras 3 EarlyStopping"),
        ("lightning_us", "Lightning EarlyStopping"),
    ]:
        value = results[name]
        shown = "not installed" if value is None else f"{value:8.2f} us"
        print(f"  {label:<28} {shown}")
    ours = results["highmark_patience_us"]
    for name in ("keras_us", "lightning_us"):
        if results[name] is not None:
            print(f"  highmark is {results[name] / ours:5.1f}x faster than {name[:-3]}")


if __name__ == "__main__":
    main()
