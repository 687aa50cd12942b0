"""The CI smoke run of the benchmark suite: it must run end to end and write both result files.

No timing is asserted: the suite reports numbers, it does not judge them in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """`benchmarks/` lives at the repository root, outside the installed package."""
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.mark.slow
def test_smoke_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--size",
            "10MB",
            "--repeat",
            "1",
            "--out",
            str(out),
            "--scratch",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    written = sorted(p.suffix for p in out.iterdir())
    assert written == [".json", ".md"]
    results = json.loads(next(out.glob("*.json")).read_text())
    failed = {k: f["error"] for k, f in results["figures"].items() if "error" in f}
    assert not failed
    assert {"limits", "save", "restore", "training", "stopping", "storage", "memory"} <= set(
        results["figures"]
    )
    assert results["targets"]


def test_size_parser_reads_the_documented_sizes() -> None:
    from benchmarks.harness import parse_size

    assert [parse_size(s) for s in ("10MB", "100MB", "1GB")] == [10**7, 10**8, 10**9]


def test_unknown_figure_is_refused() -> None:
    from benchmarks.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--only", "limits,nonsense"])


def test_interleaved_rounds_record_repeat_samples_after_the_warm_up() -> None:
    from benchmarks.harness import interleaved

    calls: list[str] = []

    def case(name: str) -> float:
        calls.append(name)
        return float(len(calls))

    res = interleaved({"a": lambda: case("a"), "b": lambda: case("b")}, 3, label="t", warmup=1)
    assert len(calls) == 8
    assert res["a"]["n"] == res["b"]["n"] == 3
    assert res["a"]["min"] <= res["a"]["median"] <= res["a"]["max"]


def test_markdown_marks_a_missed_target() -> None:
    from benchmarks.report import markdown, targets

    rows = [
        {"name": "limit: write new file + fsync", "unit": "s", "min": 1.0, "median": 1.0},
        {"name": "torch.save + fsync", "unit": "s", "min": 1.5, "median": 1.5},
        {"name": "safetensors save_file + fsync", "unit": "s", "min": 1.2, "median": 1.2},
        {
            "name": "highmark save (sync)",
            "unit": "s",
            "min": 2.0,
            "median": 2.0,
            "limit_over_this_best": 0.5,
        },
    ]
    results = {
        "meta": {
            "size": "10MB",
            "started": "now",
            "repeat": 1,
            "machine": "m",
            "torch": "t",
            "torch_threads": 1,
            "safetensors": "s",
            "seconds": 1.0,
            "state": {"bytes": 10**7, "tensors": 4, "model": "x", "model_bytes": 10**6},
        },
        "figures": {"save": {"title": "save", "rows": rows}},
    }
    results["targets"] = targets(results)
    assert [t["met"] for t in results["targets"]] == [False, False]
    assert "| **no** |" in markdown(results)
