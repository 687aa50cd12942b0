"""The dashboard in a real headless Chromium, served by a real ``highmark serve`` process.

Every test waits by polling the page's DOM with a deadline, and leaves screenshots in
``test-artifacts/screens/`` for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By

from cli.helpers import write_run

from .helpers import (
    LiveRun,
    chart_marks,
    chart_points,
    console_errors,
    run_cell,
    screenshot,
    until,
)


def test_page_lists_every_run_under_the_folder_without_console_errors(
    tmp_path: Path, serve, browser
) -> None:
    write_run(str(tmp_path / "runs" / "run-a"))
    write_run(str(tmp_path / "runs" / "run-b"), losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    write_run(str(tmp_path / "runs" / "sweep" / "lr-0.1"), seed=2)
    server = serve(str(tmp_path / "runs"))
    browser.get(server.url)
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 3)
    until(browser, lambda d: chart_points(d, "val_loss", "sweep/lr-0.1") == 6)
    screenshot(browser, "dashboard-three-runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert [e.get_attribute("data-id") for e in rows] == ["run-a", "run-b", "sweep/lr-0.1"]
    assert run_cell(browser, "run-a", "stop reason") == "val_loss did not improve for 3 evaluations"
    assert console_errors(browser) == []


def test_curve_gains_a_point_when_the_running_training_evaluates(
    tmp_path: Path, serve, browser
) -> None:
    run = LiveRun(str(tmp_path / "live"), patience=3)
    for loss in (1.0, 0.8, 0.7):
        run.evaluate(loss)
    server = serve(str(tmp_path / "live"))
    browser.get(server.url)
    until(browser, lambda d: chart_points(d, "val_loss", "live") == 3, message="3 points")
    screenshot(browser, "dashboard-live-before")
    run.evaluate(0.65)
    until(browser, lambda d: chart_points(d, "val_loss", "live") == 4, message="a 4th point")
    assert run_cell(browser, "live", "best step") == "3"
    assert run_cell(browser, "live", "evaluations") == "4"
    screenshot(browser, "dashboard-live-after")
    run.finish()
    assert console_errors(browser) == []


def test_best_step_checkpoints_and_stop_reason_appear_when_the_run_stops(
    tmp_path: Path, serve, browser
) -> None:
    run = LiveRun(str(tmp_path / "live"), patience=2)
    server = serve(str(tmp_path / "live"))
    browser.get(server.url)
    until(browser, lambda d: run_cell(d, "live", "status") == "running", message="running")
    for loss in (1.0, 0.7, 0.75, 0.8):
        stop = run.evaluate(loss)
    assert stop
    run.finish()
    until(browser, lambda d: run_cell(d, "live", "status") == "stopped", message="stopped")
    until(browser, lambda d: chart_points(d, "val_loss", "live") == 4, message="4 points")
    reason = run_cell(browser, "live", "stop reason")
    assert reason.startswith("val_loss did not improve for 2 evaluations"), reason
    assert run_cell(browser, "live", "patience left") == "0 of 2"
    until(browser, lambda d: chart_marks(d, "val_loss", "live").get("checkpoints") == "1,3")
    marks = chart_marks(browser, "val_loss", "live")
    assert (marks["best"], marks["stop"]) == ("1", "3")
    screenshot(browser, "dashboard-stopped")
    assert console_errors(browser) == []


def test_metrics_that_are_no_learning_curve_are_one_click_away(
    tmp_path: Path, serve, browser
) -> None:
    run = LiveRun(str(tmp_path / "live"))
    run.evaluate(1.0)
    run.evaluate(0.9)
    run.finish()
    server = serve(str(tmp_path / "live"))
    browser.get(server.url)
    until(browser, lambda d: chart_points(d, "val_loss", "live") == 2)
    assert chart_points(browser, "eval_runtime", "live") == 0
    browser.find_element(By.CSS_SELECTOR, "#more-metrics summary").click()
    browser.find_element(By.CSS_SELECTOR, '#more-metrics input[value="eval_runtime"]').click()
    until(browser, lambda d: chart_points(d, "eval_runtime", "live") == 2, message="runtime shown")
    screenshot(browser, "dashboard-more-metrics")
    assert console_errors(browser) == []


def test_x_axis_switches_to_wall_time_and_y_to_log_scale(tmp_path: Path, serve, browser) -> None:
    write_run(str(tmp_path / "run-a"))
    server = serve(str(tmp_path / "run-a"))
    browser.get(server.url)
    until(browser, lambda d: chart_points(d, "val_loss", "run-a") == 6)
    browser.find_element(By.CSS_SELECTOR, '#x-axis option[value="time"]').click()
    browser.find_element(By.ID, "log-scale").click()
    chart = '.chart[data-metric="val_loss"][data-x-axis="time"][data-log="true"]'
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, chart), message="redrawn")
    legend = browser.find_element(By.CSS_SELECTOR, f"{chart} .u-legend .u-label")
    assert legend.text == "wall time (s)"
    assert chart_points(browser, "val_loss", "run-a") == 6
    screenshot(browser, "dashboard-wall-time-log")
    assert console_errors(browser) == []
