"""run.json and history.jsonl: formats, append and flush per record, torn lines, local and S3."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from highmark.errors import CorruptCheckpointError, IncompatibleFormatError
from highmark.store.local import LocalStorage, open_storage
from highmark.store.runfiles import (
    HISTORY_FILE,
    RUN_FILE,
    HistoryWriter,
    metric_value,
    read_history,
    read_run_info,
)


def _record(step: int, **metrics: Any) -> dict[str, Any]:
    return {"step": step, "epoch": step, "time": 1.5 + step, "metrics": metrics}


def test_each_appended_record_can_be_read_back_at_once(run_location: Any) -> None:
    writer = HistoryWriter(open_storage(run_location.url, run_location.storage_options))
    for step in range(3):
        writer.append(_record(step, val_loss=1.0 / (step + 1)))
        history = read_history(run_location.url, run_location.storage_options)
        assert [h["step"] for h in history] == list(range(step + 1))
    assert history[2] == _record(2, val_loss=1.0 / 3)


def test_nan_infinity_and_missing_values_round_trip(run_location: Any) -> None:
    writer = HistoryWriter(open_storage(run_location.url, run_location.storage_options))
    writer.append(_record(0, a=math.nan, b=math.inf, c=-math.inf, d=None))
    (record,) = read_history(run_location.url, run_location.storage_options)
    a, b, c, d = (record["metrics"][k] for k in "abcd")
    assert math.isnan(a)
    assert (b, c, d) == (math.inf, -math.inf, None)


def test_truncate_keeps_the_first_records(run_location: Any) -> None:
    writer = HistoryWriter(open_storage(run_location.url, run_location.storage_options))
    for step in range(5):
        writer.append(_record(step, x=float(step)))
    writer.truncate(2)
    writer.append(_record(2, x=9.0))
    steps = [
        (h["step"], h["metrics"]["x"])
        for h in read_history(run_location.url, run_location.storage_options)
    ]
    assert steps == [(0, 0.0), (1, 1.0), (2, 9.0)]


def test_run_info_is_replaced_whole_with_its_format(run_location: Any) -> None:
    writer = HistoryWriter(open_storage(run_location.url, run_location.storage_options))
    assert read_run_info(run_location.url, run_location.storage_options) is None
    writer.write_run_info({"status": "running", "best_step": None})
    writer.write_run_info({"status": "stopped", "best_step": 3})
    info = read_run_info(run_location.url, run_location.storage_options)
    assert info == {"format": 1, "status": "stopped", "best_step": 3}


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_append_starts_afresh(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    HistoryWriter(storage).append(_record(0, x=1.0))
    with open(tmp_path / HISTORY_FILE, "ab") as fh:
        fh.write(b'{"step": 1, "epo')  # the process died in the middle of a write
    assert [h["step"] for h in read_history(tmp_path)] == [0]
    HistoryWriter(storage).append(_record(1, x=2.0))
    assert [h["step"] for h in read_history(tmp_path)] == [0, 1]


def test_a_run_info_from_a_newer_highmark_is_refused(tmp_path: Path) -> None:
    (tmp_path / RUN_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(IncompatibleFormatError, match="99"):
        read_run_info(tmp_path)


def test_a_run_info_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / RUN_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(CorruptCheckpointError, match=r"run\.json"):
        read_run_info(tmp_path)


@pytest.mark.parametrize("bad", ["0.5", True, b"1", object()])
def test_metric_value_refuses_non_numbers_naming_the_metric(bad: Any) -> None:
    with pytest.raises(TypeError, match="val_loss"):
        metric_value("val_loss", bad)
