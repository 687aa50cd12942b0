"""``highmark replay``: policy grids over real runs and curve files; table, --json, --plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from highmark.cli import app

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
