"""The static ``highmark report`` runs the dashboard's page code in a real Chromium, offline."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By

from cli.helpers import write_run
from highmark.cli.report import write_report

from .helpers import LiveRun, chart_points, console_errors, run_cell, screenshot, until


def test_report_draws_the_same_interactive_charts_with_no_console_error(
    tmp_path: Path, browser
) -> None:
    write_run(str(tmp_path / "run-a"))
    live = LiveRun(str(tmp_path / "hf-like"))
    for loss in (1.0, 0.8, 0.85):
        live.evaluate(loss)
    live.finish()
    out = tmp_path / "report.html"
    write_report([str(tmp_path / "run-a"), str(tmp_path / "hf-like")], str(out))
    browser.get(out.as_uri())
    until(browser, lambda d: chart_points(d, "val_loss", str(tmp_path / "run-a")) == 6)
    assert run_cell(browser, str(tmp_path / "hf-like"), "best step") == "1"
    assert chart_points(browser, "eval_runtime", str(tmp_path / "hf-like")) == 0  # one click away
    assert browser.find_elements(By.CSS_SELECTOR, '#more-metrics input[value="eval_runtime"]')
    screenshot(browser, "report")
    assert console_errors(browser) == []  # a CSP violation (wrong script hash) would show here
