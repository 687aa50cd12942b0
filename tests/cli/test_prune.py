"""``highmark prune``: the library's retention rules, dry run, confirmation and --yes."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from highmark.cli import app

from .helpers import RunFixture


def _steps(run: RunFixture) -> list[str]:
    return sorted(n for n in os.listdir(run.url) if n.startswith("step-"))


def _snapshot(run: RunFixture) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(run.url):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, run.url)] = f.read()
    return out


def test_dry_run_lists_deletions_and_changes_nothing(runner, local_run: RunFixture) -> None:
    before = _snapshot(local_run)
    result = runner.invoke(app, ["prune", local_run.url, "--keep-last", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete step 4" in result.stdout
    assert "would delete 1 checkpoint(s)" in result.stdout  # best 3 and latest 6 are protected
    assert _snapshot(local_run) == before


def test_prune_without_tty_refuses_without_yes(runner, local_run: RunFixture) -> None:
    result = runner.invoke(app, ["prune", local_run.url, "--keep-last", "1"])
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert _steps(local_run) == ["step-00000003", "step-00000004", "step-00000006"]


def test_prune_yes_deletes_and_reports_bytes_freed(runner, local_run: RunFixture) -> None:
    size = sum(
        os.path.getsize(os.path.join(local_run.url, "step-00000004", f))
        for f in os.listdir(os.path.join(local_run.url, "step-00000004"))
    )
    result = runner.invoke(app, ["prune", local_run.url, "--keep-last", "1", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert '"bytes_freed": ' + str(size) in result.stdout
    assert _steps(local_run) == ["step-00000003", "step-00000006"]


def test_prune_keeps_what_keep_best_keeps(runner, local_run: RunFixture) -> None:
    result = runner.invoke(app, ["prune", local_run.url, "--keep-best", "2", "--yes"])
    assert result.exit_code == 0, result.output
    assert "deleted 0 checkpoint(s)" in result.stdout  # 3, 4 are the two best; 6 the latest
    assert _steps(local_run) == ["step-00000003", "step-00000004", "step-00000006"]


def test_prune_asks_on_a_tty_and_deletes_after_yes(local_run: RunFixture) -> None:
    # a real pseudo-terminal as stdin, so the command sees a TTY and asks
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "highmark.cli", "prune", local_run.url, "--keep-last", "1"]
    proc = subprocess.Popen(cmd, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(follower)
    os.write(leader, b"y\n")
    out, err = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, err.decode()
    assert b"Delete these checkpoints?" in out
    assert b"deleted 1 checkpoint(s)" in out
    assert _steps(local_run) == ["step-00000003", "step-00000006"]
