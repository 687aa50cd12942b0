"""``highmark.cli.report``: one self-contained HTML file with the curves, rendered by Chromium."""

from __future__ import annotations

import base64
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


def _svg(html: str) -> str:
    match = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    assert match is not None, "no inline SVG plot"
    return base64.b64decode(match.group(1)).decode("utf-8")


def test_report_is_self_contained(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report([r.url for r in two_runs], str(out))
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "")  # only XML namespaces
    assert "https://" not in html
    assert "<script" not in html
    assert "default-src 'none'" in html


def test_report_plots_every_metric_of_every_run(two_runs) -> None:
    svg = _svg(render_html([load_run(r.url) for r in two_runs]))
    for text in ("val_loss", "val_acc", "train_loss", "run-a", "run-b", "best step",
                 "stop step", "saved checkpoint"):  # fmt: skip
        assert text in svg, text


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
    assert b'<img class="plot" id="curves"' in dom.stdout
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
