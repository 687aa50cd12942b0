"""``highmark.cli.report``: one self-contained HTML file with the curves, rendered by Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.helpers import RunFixture, write_run
from highmark.cli.commands import app
from highmark.cli.report import load_run, render_html, write_report


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[RunFixture, RunFixture]:
    a = write_run(str(tmp_path / "run-a"))
    b = write_run(str(tmp_path / "run-b"), losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    return a, b


def _data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="hm-data">(.*?)</script>', html, re.S)
    assert match is not None, "no embedded run data"
    return json.loads(match.group(1))


def test_report_is_self_contained(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report([r.url for r in two_runs], str(out))
    html = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched
    assert "<script src" not in html
    assert "default-src 'none'" in html
    assert "script-src 'sha256-" in html  # only the scripts it carries inline


def test_report_plots_every_metric_of_every_run(two_runs) -> None:
    loaded = [load_run(r.url) for r in two_runs]
    runs = _data(render_html(loaded))["runs"]
    assert [r["name"] for r in runs] == ["run-a", "run-b"]
    for run, data in zip(runs, loaded, strict=True):
        assert set(run["metrics"]) == {"val_loss", "val_acc", "train_loss"}
        assert run["steps"] == [1, 2, 3, 4, 5, 6]
        assert run["stop_step"] == 6
        assert [c["step"] for c in run["checkpoint_rows"]] == [c["step"] for c in data.checkpoints]
    assert [r["best_step"] for r in runs] == [3, 4]


def test_report_tables_list_runs_and_checkpoints(two_runs) -> None:
    html = render_html([load_run(r.url) for r in two_runs])
    assert html.count('<table class="checkpoints">') == 2
    assert html.count('<tr class="best">') == 2
    assert "val_loss did not improve for 3 evaluations" in html


def test_report_of_a_run_with_checkpoints_but_no_history(tmp_path: Path) -> None:
    import torch

    from highmark.store.manager import CheckpointManager

    url = str(tmp_path / "bare")
    with CheckpointManager(url, monitor="val_loss", keep_last=5) as manager:
        for step, loss in enumerate([0.5, 0.4, 0.45]):
            manager.save(step, {"w": torch.ones(2)}, metrics={"val_loss": loss})
    run = load_run(url)
    assert run.curve.series("val_loss") == ([0, 1, 2], [0.5, 0.4, 0.45])
    assert run.best_step == 1


def test_report_command_writes_html_and_png(two_runs, tmp_path: Path) -> None:
    out, png = tmp_path / "r.html", tmp_path / "r.png"
    args = ["report", *(r.url for r in two_runs), "-o", str(out), "--png", str(png)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium_with_the_plot(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report([r.url for r in two_runs], str(out))
    profile = tmp_path / "profile"
    base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*base, "--dump-dom", out.as_uri()], capture_output=True, timeout=180)
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    assert b'<div class="chart" data-metric="val_loss"' in dom.stdout
    assert b"<canvas" in dom.stdout
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,1400", out.as_uri()],
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    # the page is mostly white; the plot draws coloured lines: many distinct, non-white pixels
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.2).sum()
    assert coloured > 2000


def test_replay_plot_labels_only_the_trade_off_front() -> None:
    from highmark.cli.report import _front_labels

    points = [(30.0, 0.02, "p=0"), (30.0, 0.02, "p=1"), (10.0, 0.0, "p=3"), (5.0, 0.01, "p=9")]
    assert sorted(_front_labels(points)) == [(10.0, 0.0, "p=3"), (30.0, 0.02, "p=0 (+1)")]


def test_report_command_accepts_a_folder_of_runs(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "folder.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.count('<table class="checkpoints">') == 2
    assert "<h3>run-a</h3>" in html
    assert "<h3>run-b</h3>" in html
