"""The commands not parametrised elsewhere, on a run in S3 (SeaweedFS from tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from highmark.cli.commands import app
from highmark.store.local import open_storage

from .helpers import RunFixture, write_run

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_run(s3_url: str, s3_storage_options: dict[str, Any]) -> RunFixture:
    return write_run(s3_url, s3_storage_options)


def test_show_on_s3(runner, s3_run: RunFixture) -> None:
    result = runner.invoke(app, ["show", f"{s3_run.url}:latest", "--json", *s3_run.options])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 6


def test_compare_on_s3(runner, s3_run: RunFixture) -> None:
    result = runner.invoke(app, ["compare", s3_run.url, "--json", *s3_run.options])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["best_step"] == 3


def test_prune_on_s3_dry_run_then_yes(runner, s3_run: RunFixture) -> None:
    storage = open_storage(s3_run.url, storage_options=s3_run.storage_options)
    base = ["prune", s3_run.url, "--keep-last", "1", *s3_run.options]
    dry = runner.invoke(app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert storage.exists("step-00000004/manifest.json")
    done = runner.invoke(app, [*base, "--yes"])
    assert done.exit_code == 0, done.output
    assert "deleted 1 checkpoint(s)" in done.stdout
    assert not storage.exists("step-00000004/manifest.json")


def test_report_on_s3(runner, s3_run: RunFixture, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", s3_run.url, "-o", str(out), *s3_run.options])
    assert result.exit_code == 0, result.output
    assert '<script type="application/json" id="hm-data">' in out.read_text()
    assert '"val_loss":[0.9,0.7,0.5,0.55,0.6,0.65]' in out.read_text()


def test_replay_on_s3(runner, s3_run: RunFixture) -> None:
    args = ["replay", s3_run.url, "--patience", "1", "--json", *s3_run.options]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["policies"][0]["curves"][0]["stop_step"] == 4


def test_ls_of_a_folder_of_runs_on_s3(runner, s3_url: str, s3_storage_options) -> None:
    runs = [write_run(f"{s3_url}/{name}", s3_storage_options) for name in ("b", "a")]
    result = runner.invoke(app, ["ls", s3_url, "--json", *runs[0].options])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["run"].rsplit("/", 1)[-1] for r in data["runs"]] == ["a", "b"]
    assert data["count"] == 6
