"""The README cannot drift: its Python blocks run, and its quick start is two commands."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks()
    assert blocks, "the README shows the API in Python"
    for block in blocks:
        if "# not run" in block:
            continue
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_quick_start_is_exactly_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick, flags=re.S)
    assert len(blocks) == 2
    assert all("\n" not in b.strip() for b in blocks), "each quick-start block is one command"
    assert "highmark demo" in blocks[0]
    assert "pytest" in blocks[1]
    assert "torch==2.13.0" in blocks[1]
