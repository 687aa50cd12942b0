"""``highmark replay``: policy grids over real runs and curve files; table, --json, --plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from highmark.cli.commands import app

from .helpers import RunFixture


def test_replay_on_a_real_run_gives_hand_computed_numbers(runner, local_run: RunFixture) -> None:
    # val_loss 0.9, 0.7, 0.5, 0.55, 0.6, 0.65 at steps 1..6: patience 1 stops at step 4
    args = ["replay", local_run.url, "--patience", "1,2,5", "--score", "val_acc", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {p["policy"]["patience"]: p["curves"][0] for p in data["policies"]}
    assert (rows[1]["stop_step"], rows[1]["restore_step"], rows[1]["value"]) == (4, 3, 0.5)
    assert rows[1]["saved"] == pytest.approx(2 / 6)
    assert rows[1]["regret"] == 0.0
    assert rows[1]["score_regret"] == 0.0
    assert (rows[2]["stop_step"], rows[2]["saved"]) == (5, pytest.approx(1 / 6))
    assert (rows[5]["stop_step"], rows[5]["stopped"]) == (6, False)
    assert data["recommended"] == "patience=1"


def test_replay_reads_csv_keras_and_lightning_files_at_once(runner, tmp_path: Path) -> None:
    losses = [1.0, 0.8, 0.7, 0.75, 0.72, 0.71, 0.9, 0.65, 0.8, 0.85]
    csv = tmp_path / "curve.csv"
    csv.write_text("step,val_loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(losses)))
    keras = tmp_path / "history.json"
    keras.write_text(json.dumps({"loss": losses, "val_loss": losses}))
    lightning = tmp_path / "metrics.csv"
    lines = [f"{i},{10 * i + 9},{v},\n{i},{10 * i + 9},,{v}\n" for i, v in enumerate(losses)]
    lightning.write_text("epoch,step,train_loss,val_loss\n" + "".join(lines))
    args = ["replay", str(csv), str(keras), str(lightning), "--patience", "0..5", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["policies"]) == 6
    p3 = next(p for p in data["policies"] if p["policy"]["patience"] == 3)
    assert [c["stop_step"] for c in p3["curves"]] == [5, 5, 5]
    assert p3["mean_regret"] == pytest.approx(0.05)


def test_replay_table_marks_the_recommendation_and_writes_the_plot(
    runner, local_run: RunFixture, tmp_path: Path
) -> None:
    plot = tmp_path / "tradeoff.png"
    args = ["replay", local_run.url, "--patience", "0..3", "--min-delta", "0,0.1",
            "--plot", str(plot)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "8 policies x 1 curve(s)" in result.stdout
    assert "recommended: patience=0 min_delta=0.0" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_bad_range_is_one_error_line(runner, local_run: RunFixture) -> None:
    result = runner.invoke(app, ["replay", local_run.url, "--patience", "5..1"])
    assert result.exit_code == 1
    assert "bad range" in result.stderr


def test_replaying_a_runs_own_policy_reproduces_its_stop_and_best(runner, tmp_path: Path) -> None:
    import torch

    from highmark import Run

    losses = [1.0, 0.8, 0.7, 0.75, 0.72, 0.71, 0.9, 0.65, 0.8, 0.85, 0.9, 0.95]
    model = torch.nn.Linear(2, 1)
    url = str(tmp_path / "run")
    with Run(url, patience=3, async_save=False, handle_signals=False) as run:
        run.track(model=model)
        for epoch in run.epochs(max_epochs=len(losses)):
            run.report(val_loss=losses[epoch])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    stop, best = info["stop_step"], info["best_step"]
    result = runner.invoke(app, ["replay", url, "--patience", "3", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["policies"][0]["curves"][0]
    assert (row["stop_step"], row["restore_step"]) == (stop, best)
    assert row["stopped"] is True


def _run(url: str, values: list[float], monitor: str = "val_loss", mode: str = "min",
         patience: int = 3, max_epochs: int | None = None) -> None:  # fmt: skip
    """A real highmark Run that reports ``monitor`` (and nothing else) once per epoch."""
    import torch

    from highmark import Run

    with Run(url, monitor=monitor, mode=mode, patience=patience, async_save=False,
             handle_signals=False) as run:  # fmt: skip
        run.track(model=torch.nn.Linear(2, 1))
        for epoch in run.epochs(max_epochs=max_epochs or len(values)):
            run.report(**{monitor: values[epoch]})


def test_replay_skips_a_run_without_the_monitored_metric_with_a_warning(
    runner, tmp_path: Path
) -> None:
    _run(str(tmp_path / "runs" / "a"), [0.9, 0.5, 0.6, 0.4], patience=10)
    _run(str(tmp_path / "runs" / "b"), [0.1, 0.5, 0.6], monitor="val_acc", mode="max")
    args = ["replay", str(tmp_path / "runs"), "--monitor", "val_loss", "--patience", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["curves"] == ["a"]
    assert "highmark: warning: b: skipped, it has no values of 'val_loss'" in result.stderr
    assert data["warnings"][0].startswith("b: skipped")


def test_replay_with_no_curve_holding_the_metric_is_an_error(runner, local_run) -> None:
    result = runner.invoke(app, ["replay", local_run.url, "--monitor", "val_f1"])
    assert result.exit_code == 1
    assert "no curve has values of 'val_f1'" in result.stderr
    assert result.stderr.count("\n") == 1


def test_replay_says_regret_is_unknown_past_the_end_of_a_curve_cut_short(
    runner, tmp_path: Path
) -> None:
    # the run stops itself (patience 2) at epoch 4 of a budget of 10: what came after is unknown
    url = str(tmp_path / "run")
    _run(url, [0.9, 0.5, 0.6, 0.55, 0.7, 0.3], patience=2, max_epochs=10)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "stopped"
    result = runner.invoke(app, ["replay", url, "--patience", "1,2,5", "--json"])
    assert result.exit_code == 0, result.output
    rows = {p["policy"]["patience"]: p for p in json.loads(result.stdout)["policies"]}
    assert (rows[1]["curves"][0]["regret"], rows[1]["curves"][0]["cut_short"]) == (0.0, False)
    assert (rows[5]["curves"][0]["regret"], rows[5]["curves"][0]["cut_short"]) == (None, True)
    assert rows[5]["mean_regret"] is None
    assert "cut short by their run's early stopping (run)" in result.stderr
    assert "1 of 3 policies would" in result.stderr


def test_replay_of_a_run_that_used_its_whole_budget_warns_of_nothing(
    runner, tmp_path: Path
) -> None:
    url = str(tmp_path / "run")
    _run(url, [0.9, 0.5, 0.6, 0.55], patience=10)
    result = runner.invoke(app, ["replay", url, "--patience", "0..20", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert all(p["mean_regret"] is not None for p in json.loads(result.stdout)["policies"])


def test_replay_mode_auto_uses_the_mode_the_run_recorded(runner, tmp_path: Path) -> None:
    url = str(tmp_path / "run")  # "score" says nothing of its direction; the run says max
    _run(url, [0.1, 0.5, 0.3, 0.2, 0.25], monitor="score", mode="max", patience=10)
    result = runner.invoke(app, ["replay", url, "--patience", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "max"
    assert data["policies"][0]["curves"][0]["restore_step"] == 1


def test_replay_mode_auto_follows_the_metric_name_not_another_metrics_mode(
    runner, local_run: RunFixture
) -> None:
    # the run monitored val_loss (min); val_acc is accuracy-like: max, best 0.8 at step 3
    args = ["replay", local_run.url, "--monitor", "val_acc", "--patience", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "max"
    row = data["policies"][0]["curves"][0]
    assert (row["restore_step"], row["value"], row["stop_step"]) == (3, 0.8, 4)


def test_replay_mode_auto_without_a_clue_asks_for_mode(runner, tmp_path: Path) -> None:
    csv = tmp_path / "curve.csv"
    csv.write_text("step,widgets\n0,1\n1,2\n2,3\n")
    result = runner.invoke(app, ["replay", str(csv), "--monitor", "widgets"])
    assert result.exit_code == 1
    assert "'widgets'" in result.stderr
    assert "--mode" in result.stderr
    ok = runner.invoke(app, ["replay", str(csv), "--monitor", "widgets", "--mode", "max"])
    assert ok.exit_code == 0, ok.output


def test_replay_score_mode_auto_follows_the_score_name(runner, local_run: RunFixture) -> None:
    # restore step 3 (val_loss 0.5); train_loss 0.4 there, and 0.4 is also its lowest: regret 0
    args = ["replay", local_run.url, "--patience", "1", "--score", "train_loss", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["policies"][0]["curves"][0]
    assert (row["score"], row["score_regret"]) == (pytest.approx(0.4), pytest.approx(0.0))


def test_replay_with_an_unknown_mode_is_a_usage_error(runner, local_run: RunFixture) -> None:
    result = runner.invoke(
        app, ["replay", local_run.url, "--mode", "lowest"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "'lowest' is not one of 'auto', 'min', 'max'" in result.stderr


def test_replay_of_a_folder_of_runs_replays_every_run_in_it(runner, tmp_path: Path) -> None:
    _run(str(tmp_path / "runs" / "a"), [1.0, 0.8, 0.9, 0.95, 0.97])
    _run(str(tmp_path / "runs" / "b"), [1.0, 0.9, 0.8, 0.7, 0.6])
    result = runner.invoke(app, ["replay", str(tmp_path / "runs"), "--patience", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["curves"] == ["a", "b"]
    assert [row["curve"] for row in data["policies"][0]["curves"]] == ["a", "b"]
