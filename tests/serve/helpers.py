"""Helpers of the dashboard tests: a run written as training goes, the server as a real process,
and a real headless Chromium driven through chromedriver (Selenium)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from highmark.policy.stopping import EarlyStopping
from highmark.store.manager import CheckpointManager
from highmark.store.runfiles import HistoryWriter

REPO = Path(__file__).resolve().parents[2]
SCREENS = REPO / "test-artifacts" / "screens"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class LiveRun:
    """A run being written as a training writes it: ``run.json`` (running), one history record
    per :meth:`evaluate`, a checkpoint at each new best, and the final ``run.json`` at
    :meth:`finish`. The stopping decision is a real :class:`EarlyStopping`."""

    def __init__(self, url: str, patience: int = 2, **options: Any) -> None:
        self.manager = CheckpointManager(
            url, monitor="val_loss", keep_best=2, keep_last=1, **options
        )
        self.history = HistoryWriter(self.manager.storage)
        self.stopper = EarlyStopping("val_loss", mode="min", patience=patience)
        self.started = time.time()
        self.steps = 0
        self.history.write_run_info(self._info("running"))

    def _info(self, status: str) -> dict[str, Any]:
        return {
            "monitor": "val_loss", "mode": "min", "unit": "epoch", "budget": 50,
            "started": self.started, "updated": time.time(), "status": status,
            "stop_reason": self.stopper.reason if self.stopper.should_stop else None,
            "stop_step": self.stopper.stopped_step, "best_step": self.stopper.best_step,
            "policy": self.stopper.config(), "epochs_run": self.steps,
        }  # fmt: skip

    def evaluate(self, val_loss: float) -> bool:
        """Reports one evaluation at the next epoch; returns whether the stopper says stop."""
        step = self.steps
        metrics = {"val_loss": val_loss, "train_loss": val_loss - 0.1, "eval_runtime": 0.25}
        self.history.append({"step": step, "epoch": step, "time": time.time(), "metrics": metrics})
        stop = self.stopper.update(metrics, step=step)
        if self.stopper.best_step == step or stop:
            self.manager.save(step, {"w": np.full(4, float(step))}, metrics=metrics)
        self.steps += 1
        return bool(stop)

    def finish(self) -> None:
        """Writes the final ``run.json`` (stopped or budget) and releases the run."""
        self.history.write_run_info(self._info("stopped" if self.stopper.should_stop else "budget"))
        self.manager.close()


class Server:
    """``highmark serve ROOT --port 0`` as a subprocess; :attr:`url` is the address it printed."""

    def __init__(self, root: str, *args: str, timeout: float = 90.0) -> None:
        path = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        command = [sys.executable, "-m", "highmark.cli", "serve", root, "--port", "0", *args]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = ""
        deadline = time.monotonic() + timeout
        while not self.url:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line.startswith("highmark serve: "):
                self.url = line.split()[2]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            self.proc.kill()
            self.proc.wait()


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("chromium") is None:
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "chromium-driver is not installed (apt-get install chromium-driver)"
    return None


def start_browser(profile: Path, width: int = 1400, height: int = 1400) -> Any:
    """A headless Chromium with a fresh profile, its console log kept for :func:`console_errors`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.binary_location = str(shutil.which("chromium"))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    driver.set_page_load_timeout(120)
    return driver


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (CSP violations and exceptions included)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def until(driver: Any, condition: Any, timeout: float = 60.0, message: str = "") -> Any:
    """Polls ``condition(driver)`` until it returns something truthy, failing after ``timeout``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def screenshot(driver: Any, name: str) -> Path:
    """Saves what the page shows to ``test-artifacts/screens/NAME.png`` (kept for people)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def chart_points(driver: Any, metric: str, run_id: str) -> int:
    """How many points the chart of ``metric`` draws for ``run_id`` (0 when not drawn)."""
    return int(chart_marks(driver, metric, run_id).get("points") or 0)


def run_cell(driver: Any, run_id: str, column: str) -> str:
    """The text of one cell of the runs table ('' when the row is not there)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    selector = f'#runs tr[data-id="{run_id}"] td[data-col="{column}"]'
    try:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return str(found[0].text) if found else ""
    except StaleElementReferenceException:  # the table was redrawn between the two calls
        return ""


def chart_marks(driver: Any, metric: str, run_id: str) -> dict[str, str]:
    """The marks the chart of ``metric`` draws for ``run_id`` (``best``, ``stop``,
    ``checkpoints``, ``points``), read from its caption; {} while it is not drawn or redrawn."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    selector = f'.chart[data-metric="{metric}"] li[data-run="{run_id}"]'
    try:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        names = ("best", "stop", "checkpoints", "points")
        return {n: str(found[0].get_attribute(f"data-{n}")) for n in names} if found else {}
    except StaleElementReferenceException:  # the page redrew it between the two calls
        return {}
