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
