"""``highmark compare``: runs side by side and the winner; ``--json`` golden."""

from __future__ import annotations

import json

from highmark.cli.commands import app

from .helpers import check_golden, normalise


def test_compare_json_matches_golden(runner, make_run) -> None:
    a = make_run("run-a")
    b = make_run("run-b", losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    result = runner.invoke(app, ["compare", a.url, b.url, "--json"])
    assert result.exit_code == 0, result.output
    data = normalise(json.loads(result.stdout), {a.url: "<run-a>", b.url: "<run-b>"})
    check_golden("compare.json", data)


def test_compare_highlights_the_run_with_the_best_monitored_value(runner, make_run) -> None:
    a = make_run("run-a")
    b = make_run("run-b", losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    data = json.loads(runner.invoke(app, ["compare", a.url, b.url, "--json"]).stdout)
    assert data["winner"] == "run-b"
    assert [r["winner"] for r in data["runs"]] == [False, True]
    table = runner.invoke(app, ["compare", a.url, b.url], env={"COLUMNS": "200"}).stdout
    assert "winner: run-b" in table
    assert "★ run-b" in table


def test_compare_of_a_missing_run_is_one_error_line(runner, local_run, tmp_path) -> None:
    result = runner.invoke(app, ["compare", local_run.url, str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope" in result.stderr
    assert "not a highmark run" in result.stderr


def test_compare_fits_80_columns_with_the_stop_reasons_under_the_table(runner, make_run) -> None:
    a = make_run("run-a")
    b = make_run("run-b", losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    c = make_run("run-c", losses=[0.9, 0.7, 0.5], seed=2)
    result = runner.invoke(app, ["compare", a.url, b.url, c.url], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    table_end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    assert not any("did not improve" in line for line in lines[:table_end])
    below = " ".join(line.strip() for line in lines[table_end + 1 :])
    for name, step in (("run-a", 6), ("run-b", 6), ("run-c", 3)):
        assert f"{name} (epoch {step}): val_loss did not improve for 3 evaluations" in below


def test_compare_accepts_a_folder_of_runs(runner, tmp_path) -> None:
    from .helpers import write_run

    write_run(str(tmp_path / "runs" / "run-a"))
    write_run(str(tmp_path / "runs" / "run-b"), losses=[0.8, 0.6, 0.45, 0.4, 0.42, 0.5], seed=1)
    result = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["run"] for r in data["runs"]] == ["run-a", "run-b"]
    assert data["winner"] == "run-b"
