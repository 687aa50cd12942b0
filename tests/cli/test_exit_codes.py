"""Exit codes of every command, as documented: 0 done, 1 error (one line on stderr), 2 usage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from highmark.cli.commands import app

from .helpers import RunFixture

COMMANDS = ["ls", "show", "compare", "verify", "prune", "export", "report", "replay", "demo"]


def _done(command: str, run: str, tmp: Path) -> list[str]:
    """Arguments under which ``command`` succeeds on the finished run ``run``."""
    return {
        "ls": [run],
        "show": [f"{run}:best"],
        "compare": [run, run],
        "verify": [run],
        "prune": [run, "--keep-last", "1", "--dry-run"],
        "export": [run, "-o", str(tmp / "out.safetensors")],
        "report": [run, "-o", str(tmp / "report.html")],
        "replay": [run, "--patience", "1"],
    }[command]


def _failing(command: str, run: str, tmp: Path) -> list[str]:
    """Arguments that are well-formed but make ``command`` fail."""
    missing = str(tmp / "no-such-run")
    return {
        "ls": [missing],
        "show": [f"{run}:99"],
        "compare": [run, missing],
        "verify": [missing],
        "prune": [run, "--keep-last", "1"],  # no terminal to ask on, no --yes
        "export": [run, "-o", str(tmp / "x.safetensors"), "--key", "nothing"],
        "report": [missing, "-o", str(tmp / "report.html")],
        "replay": [run, "--patience", "5..1"],
    }[command]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])
def test_command_that_succeeds_exits_zero_with_a_quiet_stderr(
    runner, local_run: RunFixture, tmp_path: Path, command: str
) -> None:
    result = runner.invoke(app, [command, *_done(command, local_run.url, tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])
def test_command_that_fails_exits_one_with_one_error_line(
    runner, local_run: RunFixture, tmp_path: Path, command: str
) -> None:
    result = runner.invoke(app, [command, *_failing(command, local_run.url, tmp_path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0].removeprefix("highmark: error: ")
    assert message != lines[0]
    assert not message.strip().isdigit()  # never an exit code posing as a message
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_with_an_unknown_option_exits_two(runner, command: str) -> None:
    result = runner.invoke(app, [command, "--no-such-option"])
    assert result.exit_code == 2, result.output
    assert "No such option" in result.stderr
    assert "highmark: error" not in result.stderr


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])
def test_command_without_its_argument_exits_two(runner, command: str) -> None:
    result = runner.invoke(app, [command])
    assert result.exit_code == 2, result.output
    assert "Missing" in result.stderr


def test_demo_into_a_folder_holding_something_else_exits_two(runner, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("not a run")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--max-epochs", "1"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == ["mine.txt"]
