"""Errors are one line on stderr with a non-zero exit code; ``--debug`` shows the traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from highmark.cli.commands import app, storage_options


def test_missing_run_is_one_line_without_traceback(runner, tmp_path) -> None:
    result = runner.invoke(app, ["ls", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr.startswith("highmark: error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_debug_raises_the_original_exception(runner, tmp_path) -> None:
    from highmark.errors import CheckpointNotFoundError

    result = runner.invoke(app, ["--debug", "ls", str(tmp_path / "nope")])
    assert isinstance(result.exception, CheckpointNotFoundError)


def test_storage_options_nest_dotted_keys_and_parse_json() -> None:
    opts = storage_options(["key=abc", "client_kwargs.endpoint_url=http://x:1", "anon=false"])
    assert opts == {"key": "abc", "client_kwargs": {"endpoint_url": "http://x:1"}, "anon": False}


def test_storage_option_without_equals_is_an_error(runner, local_run) -> None:
    result = runner.invoke(app, ["ls", local_run.url, "-S", "novalue"])
    assert result.exit_code == 1
    assert "KEY=VALUE" in result.stderr


def test_console_script_runs_as_a_real_process(local_run) -> None:
    exe = shutil.which("highmark", path=str(__import__("pathlib").Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the highmark console script is not installed in this environment")
    done = subprocess.run([exe, "ls", local_run.url, "--json"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert [c["step"] for c in json.loads(done.stdout)["checkpoints"]] == [3, 4, 6]
    failed = subprocess.run([exe, "verify", local_run.url + "-missing"], capture_output=True,
                            timeout=120)  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.decode().count("\n") == 1
    assert b"Traceback" not in failed.stderr


def test_demo_command_is_wired(runner) -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "--out" in result.stdout


@pytest.mark.slow
def test_demo_command_trains_and_leaves_a_run_the_cli_reads(runner, tmp_path) -> None:
    out = str(tmp_path / "demo")
    result = runner.invoke(app, ["demo", "--out", out, "--max-epochs", "3"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["ls", out, "--json"])
    assert json.loads(listed.stdout)["count"] >= 1
