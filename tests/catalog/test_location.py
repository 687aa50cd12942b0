"""Where the catalog lives: argument, then HIGHMARK_CATALOG, then the XDG data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from highmark.catalog.location import catalog_url, default_path
from highmark.errors import ConfigError


def test_a_url_argument_is_used_as_given() -> None:
    assert catalog_url("postgresql://u@127.0.0.1/db") == "postgresql://u@127.0.0.1/db"


def test_a_file_path_argument_is_an_sqlite_file(tmp_path: Path) -> None:
    assert catalog_url(tmp_path / "c.db") == f"sqlite:///{tmp_path / 'c.db'}"


def test_false_turns_the_catalog_off() -> None:
    assert catalog_url(False) is None


def test_the_variable_is_read_when_no_argument_is_given(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIGHMARK_CATALOG", str(tmp_path / "env.db"))
    assert catalog_url() == f"sqlite:///{tmp_path / 'env.db'}"


def test_the_variable_false_turns_the_catalog_off(monkeypatch) -> None:
    monkeypatch.setenv("HIGHMARK_CATALOG", "false")
    assert catalog_url() is None


def test_the_default_is_in_the_xdg_data_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HIGHMARK_CATALOG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "highmark" / "catalog.db"
    assert catalog_url() == f"sqlite:///{tmp_path / 'highmark' / 'catalog.db'}"


def test_an_empty_location_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty location"):
        catalog_url("  ")


def test_the_test_session_never_points_the_catalog_at_the_home_dir() -> None:
    url = catalog_url()
    assert url is not None
    assert str(Path.home() / ".local") not in url
