"""Fixtures of the dashboard tests: ``highmark serve`` processes and a headless Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import Server, chromium_missing, start_browser


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Starts ``highmark serve ROOT --port 0 ARGS...``; every server is stopped at the end."""
    started: list[Server] = []

    def start(root: str, *args: str) -> Server:
        server = Server(root, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A real headless Chromium (Debian's) with a fresh profile; skipped when it is absent."""
    why = chromium_missing()
    if why is not None:
        pytest.skip(why)
    driver = start_browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
