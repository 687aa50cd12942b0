"""``highmark ls``: one row per checkpoint with metrics, size, age and flags; ``--json``."""

from __future__ import annotations

import json
import os

import pytest

from highmark.cli.commands import app

from .helpers import RunFixture, check_golden, normalise


def test_ls_json_matches_golden(runner, local_run: RunFixture) -> None:
    result = runner.invoke(app, ["ls", local_run.url, "--json"])
    assert result.exit_code == 0, result.output
    check_golden("ls.json", normalise(json.loads(result.stdout), {local_run.url: "<run>"}))


def test_ls_sizes_add_up_to_the_files_on_disk(runner, local_run: RunFixture) -> None:
    data = json.loads(runner.invoke(app, ["ls", local_run.url, "--json"]).stdout)
    for row in data["checkpoints"]:
        on_disk = sum(
            os.path.getsize(os.path.join(row["path"], f)) for f in os.listdir(row["path"])
        )
        assert row["size"] == on_disk
    assert data["total_bytes"] == sum(r["size"] for r in data["checkpoints"])


@pytest.mark.parametrize("run_location", ["local", pytest.param("s3", marks=pytest.mark.s3)],
                         indirect=True)  # fmt: skip
def test_ls_table_flags_best_latest_and_milestone(runner, any_run: RunFixture) -> None:
    result = runner.invoke(app, ["ls", any_run.url, *any_run.options], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
             if line.count("│") > 3 and line.split("│")[1].strip().isdigit()}  # fmt: skip
    assert sorted(lines, key=int) == ["3", "4", "6"]
    assert "best" in lines["3"]
    assert "milestone" in lines["4"]
    assert "latest" in lines["6"]
    assert "3 checkpoint(s)" in result.stdout


def test_ls_of_a_run_whose_index_is_gone_lists_its_checkpoints(runner, local_run) -> None:
    os.remove(os.path.join(local_run.url, "highmark.json"))
    data = json.loads(runner.invoke(app, ["ls", local_run.url, "--json"]).stdout)
    assert [c["step"] for c in data["checkpoints"]] == [3, 4, 6]
    assert not os.path.exists(os.path.join(local_run.url, "highmark.json"))  # read-only


def test_ls_of_a_folder_of_runs_lists_each_run_in_name_order(runner, tmp_path) -> None:
    from .helpers import write_run

    write_run(str(tmp_path / "runs" / "b"), losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    write_run(str(tmp_path / "runs" / "a"))
    (tmp_path / "runs" / "notes").mkdir()  # a folder that is no run is passed over
    result = runner.invoke(app, ["ls", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [os.path.basename(r["run"]) for r in data["runs"]] == ["a", "b"]
    assert [[c["step"] for c in r["checkpoints"]] for r in data["runs"]] == [[3, 4, 6], [4, 5, 6]]
    assert data["count"] == 6
    assert data["total_bytes"] == sum(r["total_bytes"] for r in data["runs"])


def test_ls_searches_a_folder_of_runs_one_level_deep_only(runner, tmp_path) -> None:
    from .helpers import write_run

    write_run(str(tmp_path / "runs" / "group" / "a"))
    result = runner.invoke(app, ["ls", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "not a highmark run" in result.stderr
