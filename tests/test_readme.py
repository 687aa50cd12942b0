"""The README cannot drift: its Python blocks run, and its quick start is two commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks()
    assert blocks, "the README shows the API in Python"
    for block in blocks:
        if "# not run" in block:
            continue
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def _run_quick_start() -> Any:
    """Runs the README's Run example in the current directory; returns its ``run``."""
    block = next(b for b in _python_blocks() if "highmark.Run(" in b)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace["run"]


def test_quick_start_example_stops_early_on_its_best_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run_quick_start()
    assert (run.stopped, run.status) == (True, "stopped")
    assert run.stopping.stopped_step < 99  # max_epochs=100: it stopped before the budget
    assert run.restored_from == run.best_step < run.stopping.stopped_step


def test_quick_start_example_run_again_resumes_and_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = _run_quick_start()
    history = (tmp_path / "runs" / "quickstart" / "history.jsonl").read_bytes()
    second = _run_quick_start()
    assert second.resumed_from == first.stopping.stopped_step
    assert "nothing more was run" in second.summary()
    assert (tmp_path / "runs" / "quickstart" / "history.jsonl").read_bytes() == history
    assert second.restored_from == first.best_step


def test_quick_start_is_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(blocks) == 2
    assert all("\n" not in b.strip() for b in blocks), "each quick-start block is one command"
    assert "highmark demo" in blocks[0]
    assert "pytest" in blocks[1]
    assert "torch==2.13.0" in blocks[1]
