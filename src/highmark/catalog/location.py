"""Where the catalog lives: the catalog= argument, else HIGHMARK_CATALOG, else the default."""

from __future__ import annotations

import os
from pathlib import Path

from highmark.errors import ConfigError

ENV = "HIGHMARK_CATALOG"
_OFF = {"false", "0", "off", "no", "none"}


def default_path() -> Path:
    """The default SQLite file: $XDG_DATA_HOME/highmark/catalog.db (~/.local/share if unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "highmark" / "catalog.db"


def catalog_url(catalog: str | os.PathLike[str] | bool | None = None) -> str | None:
    """The SQLAlchemy URL of the catalog, or None when it is turned off.

    ``catalog`` is a SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``), a file path (an
    SQLite file), ``False`` (off), or ``None``/``True`` (``HIGHMARK_CATALOG``, else
    :func:`default_path`). The variable takes the same values, ``false`` meaning off.

    >>> catalog_url("sqlite:///runs.db")
    'sqlite:///runs.db'
    >>> catalog_url(False) is None
    True
    """
    if catalog is False:
        return None
    if catalog is None or catalog is True:
        catalog = os.environ.get(ENV, "").strip() or default_path()
    text = os.fspath(catalog)
    if not text.strip():
        raise ConfigError("catalog: an empty location (give a path, a URL or False)")
    if text.strip().lower() in _OFF:
        return None
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())
