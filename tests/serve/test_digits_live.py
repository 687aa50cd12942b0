"""Done-when of the dashboard: a digits training in one process, ``highmark serve`` in another,
and Chromium sees the curve grow, the best step and checkpoints marked, and the stop reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from selenium.webdriver.common.by import By

from .helpers import REPO, chart_marks, chart_points, console_errors, run_cell, screenshot, until


def test_chromium_follows_a_digits_training_until_it_stops(tmp_path: Path, serve, browser) -> None:
    out = tmp_path / "runs" / "digits"
    out.parent.mkdir()
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    training = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("paced_digits.py")), str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert training.stdin is not None
    assert training.stdout is not None
    try:
        assert training.stdout.readline() == "ready 0\n"  # the run has begun: run.json exists
        server = serve(str(tmp_path / "runs"))
        browser.get(server.url)
        until(browser, lambda d: run_cell(d, "digits", "status") == "running")
        seen = []
        line = ""
        for epoch in range(30):
            training.stdin.write("go\n")
            training.stdin.flush()
            line = training.stdout.readline()
            until(browser, lambda d, n=epoch + 1: chart_points(d, "val_loss", "digits") == n,
                  message=f"point {epoch + 1}")  # fmt: skip
            seen.append(chart_points(browser, "val_loss", "digits"))
            if epoch == 1:
                screenshot(browser, "digits-running")
            if line.startswith("done"):
                break
        assert line == "done stopped\n", line
        assert seen == list(range(1, len(seen) + 1))  # it grew one evaluation at a time
        assert training.wait(timeout=120) == 0
        info = json.loads((out / "run.json").read_text())
        kept = sorted(int(p.name.split("-")[1]) for p in out.glob("step-*"))
        until(browser, lambda d: run_cell(d, "digits", "status") == "stopped", message="stopped")
        until(browser, lambda d: run_cell(d, "digits", "stop reason") == info["stop_reason"])
        steps = ",".join(map(str, kept))
        until(browser, lambda d: chart_marks(d, "val_loss", "digits").get("checkpoints") == steps)
        marks = chart_marks(browser, "val_loss", "digits")
        assert marks["best"] == str(info["best_step"])
        assert marks["stop"] == str(info["stop_step"])
        assert run_cell(browser, "digits", "best step") == str(info["best_step"])
        assert browser.find_elements(By.CSS_SELECTOR, '#metrics input[value="lr"]')  # LR chart
        screenshot(browser, "digits-stopped")
        assert console_errors(browser) == []
    finally:
        training.kill()
        training.wait()
