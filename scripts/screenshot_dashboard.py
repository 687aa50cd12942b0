"""Makes the README's picture of the dashboard: ``docs/images/dashboard.png``.

Trains the digits demo three times (seeds 0-2, each stopped early by highmark) into a temporary
folder, serves it with ``highmark serve`` in a subprocess, and screenshots the page in Debian's
headless Chromium (through chromedriver and Selenium, as the tests do)::

    python scripts/screenshot_dashboard.py [OUT.png]

Needs the ``demo``, ``serve`` and test extras and the ``chromium`` + ``chromium-driver`` packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def train(folder: Path) -> None:
    """Three digits runs with early stopping (the demo's model and policy)."""
    from highmark.cli.demo import main

    for seed in range(3):
        code = main(str(folder / f"digits-seed{seed}"), max_epochs=60, seed=seed, quiet=True)
        if code:
            raise SystemExit(f"the demo failed with exit code {code}")


def shoot(url: str, out: Path, profile: Path) -> None:
    """Screenshots the page at ``url`` once its charts are drawn."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in [*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1150"]:
        options.add_argument(flag)
    options.binary_location = str(shutil.which("chromium"))
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 60, poll_frequency=0.1).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".chart li[data-run]")) >= 3
        )
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="highmark-shot-") as tmp:
        runs = Path(tmp) / "runs"
        train(runs)
        path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        command = [sys.executable, "-m", "highmark.cli", "serve", str(runs), "--port", "0"]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[2]
            out.parent.mkdir(parents=True, exist_ok=True)
            shoot(url, out, Path(tmp) / "profile")
        finally:
            server.terminate()
            server.wait(timeout=30)
    sys.stdout.write(f"wrote {out}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "dashboard.png")
