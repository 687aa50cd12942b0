"""``highmark serve`` as a real process: its HTTP API, its event stream and its guards."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from cli.helpers import write_run
from highmark.cli.commands import app

from .helpers import LiveRun


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_run(str(tmp_path / "runs" / "run-a"))
    write_run(str(tmp_path / "runs" / "group" / "run-b"), seed=1)
    return tmp_path / "runs"


def test_api_lists_the_runs_found_under_the_folder(folder: Path, serve) -> None:
    server = serve(str(folder))
    status, _, body = _get(server.url + "api/runs")
    assert status == 200
    runs = json.loads(body)["runs"]
    assert [r["id"] for r in runs] == ["group/run-b", "run-a"]
    status, _, body = _get(server.url + "api/run?id=group/run-b")
    assert json.loads(body)["steps"] == [1, 2, 3, 4, 5, 6]


def test_page_and_api_carry_a_policy_that_allows_only_their_own_scripts(folder, serve) -> None:
    server = serve(str(folder))
    status, headers, body = _get(server.url)
    assert status == 200
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert b'<script src="assets/uPlot.iife.min.js"' in body
    status, headers, _ = _get(server.url + "api/runs")
    assert headers["content-security-policy"] == csp


def test_the_charting_library_and_its_licence_are_served_from_the_package(folder, serve) -> None:
    server = serve(str(folder))
    status, headers, body = _get(server.url + "assets/uPlot.iife.min.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert body.startswith(b"/*! https://github.com/leeoniya/uPlot")
    assert b"MIT License" in _get(server.url + "assets/uPlot.LICENSE")[2]
    assert _get(server.url + "assets/..%2F__init__.py")[0] == 404


def test_an_id_that_names_no_run_found_is_404(folder: Path, serve) -> None:
    server = serve(str(folder))
    assert _get(server.url + "api/run?id=../run-a")[0] == 404
    assert _get(server.url + "api/run?id=/etc/passwd")[0] == 404


def test_writes_are_refused(folder: Path, serve) -> None:
    server = serve(str(folder))
    request = urllib.request.Request(server.url + "api/runs", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=60)
    assert err.value.code == 405


def test_a_request_for_another_host_name_is_refused(folder: Path, serve) -> None:
    server = serve(str(folder))  # a page elsewhere that rebinds its name to 127.0.0.1
    assert _get(server.url + "api/runs", Host="attacker.example")[0] == 400
    assert _get(server.url + "api/runs", Host="localhost")[0] == 200


def test_event_stream_names_a_run_after_its_next_evaluation(tmp_path: Path, serve) -> None:
    run = LiveRun(str(tmp_path / "runs" / "live"))
    run.evaluate(1.0)
    server = serve(str(tmp_path / "runs"))
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", "/api/events")
    response = conn.getresponse()
    assert response.getheader("content-type").startswith("text/event-stream")

    def next_event() -> dict:
        while True:
            line = response.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[len("data: ") :])

    first = next_event()
    assert first["runs"][0]["evaluations"] == 1
    run.evaluate(0.9)
    second = next_event()
    assert second["changed"] == ["live"]
    assert second["runs"][0]["evaluations"] == 2
    conn.close()
    run.finish()


def test_a_host_other_machines_reach_needs_allow_remote(folder: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(folder), "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "--allow-remote" in result.output


def test_a_missing_folder_fails_before_listening(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nowhere"), "--port", "0"])
    assert result.exit_code == 1
    assert "nowhere" in result.output
