"""``highmark verify``: exit 0 when intact, 1 naming the damaged file."""

from __future__ import annotations

import json
import os

import pytest

from highmark.cli.commands import app

from .helpers import RunFixture


@pytest.mark.parametrize("run_location", ["local", pytest.param("s3", marks=pytest.mark.s3)],
                         indirect=True)  # fmt: skip
def test_verify_intact_run_exits_zero(runner, any_run: RunFixture) -> None:
    result = runner.invoke(app, ["verify", any_run.url, *any_run.options])
    assert result.exit_code == 0, result.output
    assert "3 checkpoint(s) checked, 0 damaged" in result.stdout


def test_verify_corrupted_file_exits_one_and_names_it(runner, local_run: RunFixture) -> None:
    target = os.path.join(local_run.url, "step-00000004", "model.safetensors")
    with open(target, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\xff\xfe\xfd")
    result = runner.invoke(app, ["verify", local_run.url])
    assert result.exit_code == 1
    assert "step-00000004/model.safetensors" in result.stdout
    assert "1 damaged" in result.stdout


def test_verify_missing_file_json_names_step_and_file(runner, local_run: RunFixture) -> None:
    os.remove(os.path.join(local_run.url, "step-00000006", "optimizer.safetensors"))
    result = runner.invoke(app, ["verify", local_run.url, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert [(d["step"], d["file"].endswith("optimizer.safetensors")) for d in data["damaged"]] == [
        (6, True)
    ]


def _flip_last_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_names_the_damaged_file_by_its_own_path(runner, local_run: RunFixture) -> None:
    target = os.path.join(local_run.url, "step-00000004", "model.safetensors")
    _flip_last_byte(target)
    result = runner.invoke(app, ["verify", local_run.url])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith(f"DAMAGED step 4: {target}: ")
    data = json.loads(runner.invoke(app, ["verify", local_run.url, "--json"]).stdout)
    assert [d["file"] for d in data["damaged"]] == [target]


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_verify_damage_exits_one_with_nothing_on_stderr(
    runner, local_run: RunFixture, as_json: list[str]
) -> None:
    _flip_last_byte(os.path.join(local_run.url, "step-00000006", "model.safetensors"))
    result = runner.invoke(app, ["verify", local_run.url, *as_json])
    assert result.exit_code == 1
    assert result.stderr == ""  # the damage is the output, on stdout; no "highmark: error: 1"
