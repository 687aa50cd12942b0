"""``highmark.serve.runs``: finding runs under a folder, reading one without changing it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cli.helpers import write_run
from highmark.errors import ConfigError
from highmark.serve.runs import discover, read_run


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_discover_finds_runs_at_any_depth_and_skips_hidden_folders(tmp_path: Path) -> None:
    for rel in ("a", "sweep/lr-0.1", "sweep/deep/er/run", ".trash/old"):
        write_run(str(tmp_path / rel))
    (tmp_path / "notes").mkdir()
    assert discover(str(tmp_path)) == {
        "a": f"{tmp_path}/a",
        "sweep/deep/er/run": f"{tmp_path}/sweep/deep/er/run",
        "sweep/lr-0.1": f"{tmp_path}/sweep/lr-0.1",
    }


def test_discover_of_a_run_names_the_run_itself(tmp_path: Path) -> None:
    write_run(str(tmp_path / "run-a"))
    assert discover(str(tmp_path / "run-a")) == {"run-a": str(tmp_path / "run-a")}


def test_discover_refuses_a_missing_folder_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere"):
        discover(str(tmp_path / "nowhere"))


def test_reading_a_run_changes_no_file(tmp_path: Path) -> None:
    write_run(str(tmp_path / "run-a"))
    before = _tree(tmp_path)
    files = read_run(str(tmp_path / "run-a"))
    assert [c["step"] for c in files.checkpoints] == [3, 4, 6]
    assert len(files.records) == 6
    assert _tree(tmp_path) == before


def test_a_damaged_run_json_is_named_and_the_rest_still_read(tmp_path: Path) -> None:
    write_run(str(tmp_path / "run-a"))
    (tmp_path / "run-a" / "run.json").write_text("{not json")
    files = read_run(str(tmp_path / "run-a"))
    assert files.error is not None
    assert "run.json" in files.error
    assert len(files.records) == 6
    assert files.monitor == "val_loss"  # from the checkpoint index
