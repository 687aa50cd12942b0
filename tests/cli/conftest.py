"""Fixtures of the CLI tests: real runs on local disk and S3, and typer's CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from .helpers import RunFixture, write_run


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def local_run(tmp_path: Path) -> RunFixture:
    """A finished run on local disk."""
    return write_run(str(tmp_path / "run-a"))


@pytest.fixture
def any_run(run_location: Any) -> RunFixture:
    """The same finished run, once on local disk and once on S3."""
    return write_run(run_location.url, run_location.storage_options)


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., RunFixture]:
    """Writes further local runs: ``make_run("b", losses=[...], seed=1)``."""

    def make(name: str, **kwargs: Any) -> RunFixture:
        return write_run(str(tmp_path / name), **kwargs)

    return make
