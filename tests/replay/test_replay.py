"""``highmark.replay``: policy evaluation on small curves, every number checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from highmark.errors import ConfigError
from highmark.replay import replay
from highmark.replay.curves import Curve, curve_from_csv, curve_from_json, load_curves
from highmark.replay.grid import parse_grid, parse_values, resolve_mode

# best anywhere: 0.65 at step 7; the plateau 3..6 ends the patience 1/3/4 policies early.
LOSS = [1.0, 0.8, 0.7, 0.75, 0.72, 0.71, 0.9, 0.65, 0.8, 0.85]
ACC = [0.5, 0.6, 0.7, 0.72, 0.71, 0.7, 0.6, 0.8, 0.78, 0.77]


def make_curve(name: str, values: list[float], **others: list[float]) -> Curve:
    rows: list[dict[str, float | None]] = []
    for i, v in enumerate(values):
        row: dict[str, float | None] = {"val_loss": v}
        row.update({k: vs[i] for k, vs in others.items()})
        rows.append(row)
    return Curve(name=name, steps=list(range(len(values))), rows=rows)


def by_patience(result, patience: int):
    return next(p for p in result.policies if p.policy["patience"] == patience)


def test_parse_values_accepts_value_list_and_range() -> None:
    assert parse_values("5", int) == [5]
    assert parse_values("2,5,10", int) == [2, 5, 10]
    assert parse_values("0..30", int) == list(range(31))
    assert parse_values("0..0.003:0.001", float) == pytest.approx([0.0, 0.001, 0.002, 0.003])


def test_parse_values_rejects_garbage_with_config_error() -> None:
    with pytest.raises(ConfigError, match="bad value"):
        parse_values("five", int)
    with pytest.raises(ConfigError, match="bad range"):
        parse_values("9..2", int)


def test_parse_grid_is_the_product_of_the_options() -> None:
    grid = parse_grid({"patience": "1,2", "min_delta": "0,0.1", "mode": None})
    assert grid == [
        {"patience": 1, "min_delta": 0.0},
        {"patience": 1, "min_delta": 0.1},
        {"patience": 2, "min_delta": 0.0},
        {"patience": 2, "min_delta": 0.1},
    ]


def test_stop_restore_regret_and_saving_match_hand_computation() -> None:
    result = replay([make_curve("a", LOSS)], parse_grid({"patience": "1,3,4,5"}), tolerance=0.0)
    p1, p3, p4, p5 = (by_patience(result, p).curves[0] for p in (1, 3, 4, 5))
    # patience 1: 1.0, 0.8, 0.7 improve; 0.75 at step 3 is the first miss -> stop at 3
    assert (p1.stop_step, p1.stopped, p1.restore_step, p1.evaluations) == (3, True, 2, 4)
    assert p1.value == 0.7
    assert p1.regret == pytest.approx(0.05)
    assert p1.saved == pytest.approx(0.6)
    assert (p3.stop_step, p3.restore_step, p3.saved) == (5, 2, pytest.approx(0.4))
    assert (p4.stop_step, p4.restore_step, p4.saved) == (6, 2, pytest.approx(0.3))
    # patience 5 sees 0.65 at step 7 and never runs out: full budget, zero regret
    assert (p5.stop_step, p5.stopped, p5.restore_step) == (9, False, 7)
    assert (p5.regret, p5.saved) == (0.0, 0.0)


def test_recommends_the_cheapest_policy_within_tolerance() -> None:
    grid = parse_grid({"patience": "1,3,4,5"})
    strict = replay([make_curve("a", LOSS)], grid, tolerance=0.01)
    assert strict.recommended is not None
    assert strict.recommended.policy == {"patience": 5}
    loose = replay([make_curve("a", LOSS)], grid, tolerance=0.05)
    assert loose.recommended is not None
    assert loose.recommended.policy == {"patience": 1}


def test_no_recommendation_when_every_policy_exceeds_tolerance() -> None:
    result = replay([make_curve("a", LOSS)], parse_grid({"patience": "1"}), tolerance=0.001)
    assert result.recommended is None
    assert "no policy" in result.note


def test_aggregates_are_means_over_curves() -> None:
    # curve b improves every step: no policy stops, regret 0, saved 0
    curves = [make_curve("a", LOSS), make_curve("b", [1.0, 0.9, 0.8, 0.7])]
    p1 = by_patience(replay(curves, parse_grid({"patience": "1"})), 1)
    assert p1.mean_regret == pytest.approx((0.05 + 0.0) / 2)
    assert p1.max_regret == pytest.approx(0.05)
    assert p1.mean_saved == pytest.approx((0.6 + 0.0) / 2)
    assert p1.stopped_fraction == 0.5


def test_min_delta_keeps_the_older_best_for_restore() -> None:
    curve = make_curve("a", [1.0, 0.95, 0.94, 0.93])
    result = replay([curve], parse_grid({"patience": "2", "min_delta": "0.1"}))
    row = result.policies[0].curves[0]
    # 0.95 and 0.94 are not 0.1 better than 1.0: wait reaches 2 at step 2; best stays step 0
    assert (row.stop_step, row.restore_step, row.value) == (2, 0, 1.0)
    assert row.regret == pytest.approx(0.07)
    assert row.saved == pytest.approx(0.25)


def test_score_regret_is_measured_at_the_restore_step() -> None:
    curve = make_curve("a", LOSS, test_acc=ACC)
    result = replay([curve], parse_grid({"patience": "1"}), score="test_acc")
    row = result.policies[0].curves[0]
    assert row.score == 0.7  # at restore step 2
    assert row.score_regret == pytest.approx(0.8 - 0.7)
    assert result.policies[0].mean_score_regret == pytest.approx(0.1)


def test_max_mode_regret_is_best_minus_value() -> None:
    curve = Curve("acc", list(range(5)), [{"val_acc": v} for v in (0.5, 0.7, 0.6, 0.65, 0.9)])
    result = replay([curve], parse_grid({"patience": "2"}), monitor="val_acc", mode="max")
    row = result.policies[0].curves[0]
    assert (row.stop_step, row.restore_step) == (3, 1)
    assert row.regret == pytest.approx(0.9 - 0.7)


def test_nan_stops_at_once_and_is_never_restored() -> None:
    curve = make_curve("a", [1.0, 0.5, math.nan, 0.1])
    row = replay([curve], parse_grid({"patience": "5"})).policies[0].curves[0]
    assert (row.stop_step, row.stopped, row.restore_step) == (2, True, 1)
    assert row.regret == pytest.approx(0.4)


def test_threshold_criterion_in_the_grid_stops_early() -> None:
    result = replay(
        [make_curve("a", LOSS)], parse_grid({"patience": "5", "criteria": "none,threshold:0.75"})
    )
    plain, thresh = (p.curves[0] for p in result.policies)
    assert plain.stop_step == 9
    assert (thresh.stop_step, thresh.restore_step) == (2, 2)  # 0.7 < 0.75 stops at once


def test_unknown_criterion_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown criterion"):
        replay([make_curve("a", LOSS)], parse_grid({"criteria": "magic:3"}))


def test_missing_monitor_names_the_curve_and_its_metrics() -> None:
    with pytest.raises(ConfigError, match=r"val_acc.*val_loss"):
        replay([make_curve("a", LOSS)], [{}], monitor="val_acc")


def test_json_form_is_plain_data() -> None:
    result = replay([make_curve("a", LOSS)], parse_grid({"patience": "1,5"}))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["recommended"] == "patience=5"
    assert data["policies"][0]["curves"][0]["stop_step"] == 3


def test_csv_uses_the_step_column() -> None:
    curve = curve_from_csv("step,val_loss,note\n10,0.5,x\n20,0.4,y\n", "c.csv")
    assert curve.steps == [10, 20]
    assert curve.rows == [{"val_loss": 0.5}, {"val_loss": 0.4}]


def test_lightning_metrics_csv_rows_are_merged_by_epoch() -> None:
    text = "epoch,step,train_loss,val_loss\n0,9,0.9,\n0,9,,0.8\n1,19,0.7,\n1,19,,0.6\n"
    curve = curve_from_csv(text, "metrics.csv")
    assert curve.steps == [0, 1]
    assert curve.rows == [
        {"train_loss": 0.9, "val_loss": 0.8},
        {"train_loss": 0.7, "val_loss": 0.6},
    ]


def test_keras_history_json_is_indexed_by_epoch() -> None:
    curve = curve_from_json({"loss": [1.0, 0.8], "val_loss": [1.1, 0.9]}, "h.json")
    assert curve.steps == [0, 1]
    assert curve.series("val_loss") == ([0, 1], [1.1, 0.9])


def test_load_curves_reads_many_files_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"val_loss": LOSS}))
    (tmp_path / "b.csv").write_text(
        "epoch,val_loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(LOSS))
    )
    curves = load_curves([str(tmp_path / "a.json"), str(tmp_path / "b.csv")])
    result = replay(curves, parse_grid({"patience": "1"}))
    assert [r.stop_step for r in result.policies[0].curves] == [3, 3]


def test_load_curves_of_a_directory_finds_its_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"val_loss": LOSS}))
    (tmp_path / "b.json").write_text(json.dumps({"val_loss": LOSS}))
    assert len(load_curves([str(tmp_path)])) == 2


def test_load_curves_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_curves([str(tmp_path / "nope.csv")])


def test_smoothing_in_the_grid_delays_the_stop() -> None:
    # a single spike at step 3 stops patience 1; a moving average over 3 irons it out
    curve = make_curve("a", [1.0, 0.9, 0.8, 0.85, 0.7, 0.6, 0.5])
    result = replay([curve], parse_grid({"patience": "1", "smoothing": "none,ma:3"}))
    raw, smooth = (p.curves[0] for p in result.policies)
    assert raw.stop_step == 3
    assert smooth.stop_step == 6
    assert smooth.restore_step == 6


def test_generalization_loss_criterion_stops_where_gl_exceeds_alpha() -> None:
    # GL(t) = 100 * (E(t) / min E - 1): 0.75/0.7 -> 7.1 (step 3), 0.9/0.7 -> 28.6 (step 6)
    grid = parse_grid({"patience": "30", "criteria": "gl:5,gl:10"})
    gl5, gl10 = (p.curves[0] for p in replay([make_curve("a", LOSS)], grid).policies)
    assert (gl5.stop_step, gl5.restore_step) == (3, 2)
    assert (gl10.stop_step, gl10.restore_step) == (6, 2)
    assert gl10.reason


def test_monitor_and_mode_default_to_what_the_run_recorded() -> None:
    rows: list[dict[str, float | None]] = [{"val_acc": v} for v in (0.5, 0.7, 0.6, 0.65, 0.9)]
    curve = Curve("acc", list(range(5)), rows, info={"monitor": "val_acc", "mode": "max"})
    result = replay([curve], parse_grid({"patience": "2"}))
    assert result.monitor == "val_acc"
    assert result.policies[0].curves[0].regret == pytest.approx(0.9 - 0.7)


def test_curves_without_the_monitor_are_skipped_with_a_warning() -> None:
    other = Curve("acc-only", [0, 1], [{"val_acc": 0.5}, {"val_acc": 0.6}])
    result = replay([make_curve("a", LOSS), other], parse_grid({"patience": "1"}))
    assert result.curves == ["a"]
    assert [len(p.curves) for p in result.policies] == [1]
    assert result.warnings == ["acc-only: skipped, it has no values of 'val_loss' (its metrics: "
                               "val_acc)"]  # fmt: skip


def test_a_curve_cut_short_leaves_the_regret_of_a_later_stopper_unknown() -> None:
    curve = make_curve("a", LOSS[:6])  # its run stopped itself at step 5
    curve.info = {"status": "stopped", "stop_step": 5}
    result = replay([curve], parse_grid({"patience": "1,4"}))
    p1, p4 = (by_patience(result, p).curves[0] for p in (1, 4))
    assert (p1.stopped, p1.cut_short, p1.regret) == (True, False, 0.0)  # stops at 3, best 0.7
    assert (p4.stopped, p4.cut_short, p4.regret) == (False, True, None)  # would run past 5
    assert by_patience(result, 4).mean_regret is None
    assert result.recommended is not None
    assert result.recommended.policy == {"patience": 1}
    assert len(result.warnings) == 1
    assert "1 of 2 policies would" in result.warnings[0]


def test_a_curve_that_ran_its_budget_has_every_regret_known() -> None:
    curve = make_curve("a", LOSS[:6])
    curve.info = {"status": "budget"}
    result = replay([curve], parse_grid({"patience": "1,3"}))
    assert [p.curves[0].regret for p in result.policies] == [0.0, 0.0]
    assert result.warnings == []


def test_mode_auto_prefers_the_recorded_mode_then_the_name() -> None:
    assert resolve_mode("val_loss", "max") == "max"  # given: taken as is
    assert resolve_mode("score", "auto", [{"monitor": "score", "mode": "max"}]) == "max"
    assert resolve_mode("val_acc", "auto", [{"monitor": "val_loss", "mode": "min"}]) == "max"
    assert resolve_mode("val_loss", None) == "min"


def test_mode_auto_refuses_a_name_that_does_not_say() -> None:
    with pytest.raises(ConfigError, match=r"'widgets'.*--mode"):
        resolve_mode("widgets", "auto")
    with pytest.raises(ConfigError, match="--score-mode"):
        resolve_mode("widgets", "auto", option="score_mode")


def test_mode_auto_refuses_runs_that_disagree() -> None:
    runs = [{"monitor": "score", "mode": "max"}, {"monitor": "score", "mode": "min"}]
    with pytest.raises(ConfigError, match="both"):
        resolve_mode("score", "auto", runs)


def test_an_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'auto', 'min' or 'max'"):
        resolve_mode("val_loss", "lowest")


def test_grid_docstring_examples_hold() -> None:
    import doctest

    from highmark.replay import grid

    result = doctest.testmod(grid)
    assert (result.failed, result.attempted > 0) == (0, True)
