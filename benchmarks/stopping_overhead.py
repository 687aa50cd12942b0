"""Figure 5: the cost of one early-stopping update, highmark vs Keras 3 vs Lightning.

The measurement is ``benchmarks/bench_stopping.py`` (written with the stopping policy): the same
metric values fed through a fresh stopper of each library, patience high enough that none stops,
best of ``repeat`` passes per stopper. This module turns its result into the figure's rows.
"""

from __future__ import annotations

from typing import Any

from benchmarks import bench_stopping
from benchmarks.harness import Context, progress, row

#: bench_stopping.run's keys -> the row names of this figure
_ROWS = {
    "highmark_patience_us": "highmark EarlyStopping.update",
    "highmark_all_criteria_us": "highmark EarlyStopping.update, all criteria on",
    "keras_us": "Keras 3 EarlyStopping.on_epoch_end",
    "lightning_us": "Lightning EarlyStopping._evaluate_stopping_criteria",
}


def run(ctx: Context) -> dict[str, Any]:
    """Measures the stoppers; returns figure ``stopping``."""
    progress("stopping: benchmarks/bench_stopping.run")
    result = bench_stopping.run(max(ctx.repeat, 3))
    rows = [
        row(label, {"min": result[key]}, unit="us/update (best of runs)")
        for key, label in _ROWS.items()
        if result.get(key) is not None
    ]
    missing = [label for key, label in _ROWS.items() if result.get(key) is None]
    figure: dict[str, Any] = {
        "title": "Figure 5 - stopping overhead per update()",
        "source": "benchmarks/bench_stopping.py",
        "rows": rows,
        "result": result,
    }
    if missing:
        figure["skipped"] = "not installed: " + ", ".join(missing)
    return {"stopping": figure}
