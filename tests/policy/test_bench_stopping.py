"""benchmarks/bench_stopping.py keeps working (its numbers are not asserted: no timing tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_stopping.py"


def test_run_measures_highmark_keras_and_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    spec = importlib.util.spec_from_file_location("bench_stopping", BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.run(repeat=1)
    for key in ("highmark_patience_us", "highmark_all_criteria_us", "keras_us", "lightning_us"):
        assert results[key] > 0, key
