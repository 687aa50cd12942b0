"""``highmark.serve.feed``: which runs changed, by polling their files (local disk and S3)."""

from __future__ import annotations

from pathlib import Path

from cli.helpers import write_run
from highmark.serve.feed import RunFeed

from .helpers import LiveRun


class Clock:
    """A hand-moved clock for the rediscovery interval (no waiting in tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_appended_evaluation_marks_its_run_changed(run_location) -> None:
    run = LiveRun(run_location.url, **run_location.kwargs)
    run.evaluate(1.0)
    feed = RunFeed(run_location.url, run_location.storage_options)
    name = feed.poll()
    assert len(name) == 1
    assert feed.poll() == []
    run.evaluate(0.9)
    assert feed.poll() == name
    assert feed.summaries()[0]["evaluations"] == 2
    run.finish()
    assert feed.poll() == name
    assert feed.summaries()[0]["status"] == "budget"


def test_payload_is_read_again_after_a_change(tmp_path: Path) -> None:
    run = LiveRun(str(tmp_path / "live"))
    run.evaluate(1.0)
    feed = RunFeed(str(tmp_path / "live"))
    feed.poll()
    assert feed.payload("live")["steps"] == [0]
    run.evaluate(0.9)
    feed.poll()
    assert feed.payload("live")["steps"] == [0, 1]
    run.finish()


def test_new_and_removed_runs_are_seen_at_the_next_walk(tmp_path: Path) -> None:
    import shutil

    write_run(str(tmp_path / "a"))
    clock = Clock()
    feed = RunFeed(str(tmp_path), rediscover=5.0, clock=clock)
    assert feed.poll() == ["a"]
    write_run(str(tmp_path / "b"))
    assert feed.poll() == []  # not walked again yet
    clock.now = 5.0
    assert feed.poll() == ["b"]
    shutil.rmtree(tmp_path / "a")
    clock.now = 10.0
    assert feed.poll() == ["a"]
    assert [r["id"] for r in feed.summaries()] == ["b"]
    assert feed.payload("a") is None


def test_an_unknown_id_reads_nothing(tmp_path: Path) -> None:
    write_run(str(tmp_path / "a"))
    feed = RunFeed(str(tmp_path))
    feed.poll()
    assert feed.payload("../a") is None
    assert feed.payload("/etc") is None
