"""``highmark watch``: the terminal view of a run, rendered once or refreshed as the run grows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from highmark.cli.commands import app
from highmark.cli.watch import summarize
from highmark.serve.runs import RunFiles, read_run
from highmark.store.local import open_storage


def test_watch_once_shows_best_checkpoints_and_stop_reason(runner, local_run) -> None:
    result = runner.invoke(app, ["watch", local_run.url, "--once"])
    assert result.exit_code == 0, result.output
    assert "0.5 at step 3" in result.stdout
    assert "3, 4, 6" in result.stdout
    assert "did not improve for 3 evaluations" in result.stdout


def test_watch_never_changes_the_run(runner, local_run) -> None:
    storage = open_storage(local_run.url)
    before = {n: storage.read_bytes(n) for n in ("run.json", "history.jsonl", "highmark.json")}
    assert runner.invoke(app, ["watch", local_run.url, "--once"]).exit_code == 0
    assert before == {n: storage.read_bytes(n) for n in before}


def test_summary_counts_wait_since_best_and_estimates_the_stop() -> None:
    records = [{"step": s, "time": 100.0 + 2 * s, "metrics": {"val_loss": v}}
               for s, v in enumerate([0.9, 0.5, 0.6, 0.7], start=1)]  # fmt: skip
    files = RunFiles("r", info={"status": "running", "policy": {"patience": 5}, "budget": 100},
                     records=records, monitor="val_loss", mode="min")  # fmt: skip
    state = summarize(files)
    assert (state.best_step, state.best_value, state.wait, state.patience) == (2, 0.5, 2, 5)
    assert state.eta_s == 3 * 2.0  # three evaluations of patience left, two seconds apart


APPEND = """
import sys, time
from highmark.store.local import open_storage
from highmark.store.runfiles import HistoryWriter
HistoryWriter(open_storage(sys.argv[1])).append(
    {"step": 7, "epoch": 7, "time": time.time(), "metrics": {"val_loss": 0.25}})
"""


def test_watch_shows_an_evaluation_appended_by_another_process(runner, local_run) -> None:
    first = runner.invoke(app, ["watch", local_run.url, "--once"]).stdout
    assert "0.25" not in first
    subprocess.run([sys.executable, "-c", APPEND, local_run.url], check=True, timeout=60)
    second = runner.invoke(app, ["watch", local_run.url, "--once"]).stdout
    assert "0.25" in second
    assert read_run(local_run.url).records[-1]["step"] == 7


@pytest.mark.timeout(120)
def test_live_watch_follows_a_growing_run_and_leaves_on_ctrl_c(local_run) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "highmark.cli", "watch", local_run.url]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        seen = ""
        while "stop reason" not in seen:  # the first render is out
            seen += proc.stdout.readline()
        subprocess.run([sys.executable, "-c", APPEND, local_run.url], check=True, timeout=60)
        while "0.25" not in seen:  # a second render, after the file grew
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
