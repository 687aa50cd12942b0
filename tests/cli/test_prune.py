"""``highmark prune``: the library's retention rules, dry run, confirmation and --yes."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from highmark.cli.commands import app

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


def _ask(local_run: RunFixture, answer: bytes, *extra: str) -> tuple[int, bytes, bytes]:
    """Runs prune as a real process on a pseudo-terminal and answers its question."""
    leader, follower = pty.openpty()
    cmd = [sys.executable, "-m", "highmark.cli", "prune", local_run.url, *extra]
    proc = subprocess.Popen(cmd, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(follower)
    os.write(leader, answer)
    out, err = proc.communicate(timeout=120)
    os.close(leader)
    return proc.returncode, out, err


def test_prune_asks_on_a_tty_and_deletes_after_yes(local_run: RunFixture) -> None:
    code, out, err = _ask(local_run, b"y\n", "--keep-last", "1")
    assert code == 0, err.decode()
    assert b"Delete these checkpoints?" in out
    assert b"deleted 1 checkpoint(s)" in out
    assert _steps(local_run) == ["step-00000003", "step-00000006"]


def test_prune_declined_at_the_prompt_exits_zero_and_deletes_nothing(
    local_run: RunFixture,
) -> None:
    code, out, err = _ask(local_run, b"n\n", "--keep-last", "1")
    assert code == 0, err.decode()
    assert err == b""  # no "highmark: error: 0"
    assert b"nothing deleted" in out
    assert _steps(local_run) == ["step-00000003", "step-00000004", "step-00000006"]


def _unranked_run(url: str) -> None:
    """A run saved without a monitor: its index records no metric to rank by."""
    import torch

    from highmark.store.manager import CheckpointManager

    with CheckpointManager(url, keep_last=10) as manager:
        for step, acc in enumerate([0.5, 0.9, 0.7, 0.6], start=1):
            manager.save(step, {"w": torch.full((2,), float(step))}, metrics={"val_acc": acc})


def test_prune_keep_best_ranks_by_monitor_in_the_mode_its_name_implies(runner, tmp_path) -> None:
    url = str(tmp_path / "bare")
    _unranked_run(url)
    args = ["prune", url, "--keep-best", "1", "--monitor", "val_acc", "--yes", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(n for n in os.listdir(url) if n.startswith("step-")) == [
        "step-00000002",  # val_acc 0.9: the best by max
        "step-00000004",  # the latest is always kept
    ]


def test_prune_keep_best_without_a_metric_to_rank_by_deletes_nothing(runner, tmp_path) -> None:
    url = str(tmp_path / "bare")
    _unranked_run(url)
    result = runner.invoke(app, ["prune", url, "--keep-best", "1", "--yes"])
    assert result.exit_code == 1
    assert "--monitor" in result.stderr
    assert len([n for n in os.listdir(url) if n.startswith("step-")]) == 4
