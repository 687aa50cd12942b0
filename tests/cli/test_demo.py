"""The digits demo: trains, stops, prints the summary and how to inspect the run; starts fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from highmark.cli.demo import main
from highmark.store.runfiles import read_history, read_run_info


def test_demo_trains_and_tells_how_to_inspect_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(str(out), max_epochs=3) == 0
    text = capsys.readouterr().out
    assert "val_loss" in text
    assert "patience left" in text
    assert "epochs run:  3 of 3" in text
    assert "the model holds the best weights" in text
    assert f"highmark ls {out}" in text
    assert f"highmark report {out} -o report.html" in text
    info = read_run_info(out)
    assert info is not None
    assert info["status"] == "budget"


def test_demo_starts_fresh_over_an_earlier_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(str(out), max_epochs=2, quiet=True) == 0
    assert main(str(out), max_epochs=2, quiet=True) == 0
    assert [h["step"] for h in read_history(out)] == [0, 1]
    assert read_run_info(out)["resumed"] == []  # type: ignore[index]


def test_demo_refuses_a_directory_that_holds_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(str(tmp_path), max_epochs=1) == 2
    assert "holds no highmark run" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").exists()
