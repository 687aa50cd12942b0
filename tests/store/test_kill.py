"""SIGKILL at random moments of the save path never leaves a broken or inconsistent store."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kill_child import state_for

from highmark.store.manager import CheckpointManager
from s3server import RunLocation

CHILD = str(Path(__file__).with_name("kill_child.py"))
KILLS = 50
S3_KILLS = 8


def assert_same(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict)
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)
    else:
        assert got == want
        assert type(got) is type(want)


def run_child_and_kill(loc: RunLocation, seed: int, start: int, rng: random.Random) -> int | None:
    """Starts a saving child, kills it after a random number of commits; returns the last one."""
    use_async = "1" if seed % 2 else "0"
    options = [json.dumps(loc.storage_options)] if loc.storage_options else []
    child = subprocess.Popen(
        [sys.executable, CHILD, loc.url, str(seed), str(start), use_async, *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    last = None
    for _ in range(rng.randint(0, 4)):  # event-driven: wait for the child's commit lines
        last = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    for line in child.stdout.read().split():  # commits printed before the kill landed
        last = int(line)
    child.stdout.close()
    return last


def kill_loop(loc: RunLocation, kills: int) -> tuple[int, int]:
    """Kills ``kills`` saving children; after each, checks the store. Returns (steps, mid-write)."""
    rng = random.Random(20261125)
    start, committed_ever, mid_write = 0, None, 0
    for seed in range(kills):
        last = run_child_and_kill(loc, seed, start, rng)
        committed_ever = last if last is not None else committed_ever
        if loc.kind == "local":  # a mid-write kill leaves a staging dir, cleaned at the open
            mid_write += any(n.startswith(".tmp-") for n in os.listdir(loc.url))
        with CheckpointManager(loc.url, keep_best=0, keep_last=2, **loc.kwargs) as mgr:
            names = mgr.storage.listdir()
            report = mgr.verify()
            assert report.ok, report.damaged
            assert not [n for n in names if n.startswith(".tmp")]
            assert all(mgr.storage.is_committed(n) for n in names if n.startswith("step-"))
            latest = mgr.latest
            if committed_ever is not None:
                assert latest is not None
                assert latest.step >= committed_ever
            if latest is not None:
                assert_same(mgr.restore("latest"), state_for(latest.step))
                start = latest.step + 1
    assert committed_ever is not None
    return committed_ever, mid_write


@pytest.mark.slow
def test_sigkill_during_saves_leaves_the_last_committed_state(tmp_path: Path) -> None:
    loc = RunLocation("local", str(tmp_path / "run"))
    committed, mid_write = kill_loop(loc, KILLS)
    assert committed > KILLS // 2
    assert mid_write > 0  # some kills landed while a checkpoint was being written
    print(f"{KILLS} kills, {mid_write} mid-write, {committed} steps committed")


@pytest.mark.slow
@pytest.mark.s3
def test_sigkill_during_saves_to_s3_leaves_the_last_committed_state(
    s3_url: str, s3_storage_options: dict[str, Any]
) -> None:
    committed, _ = kill_loop(RunLocation("s3", s3_url, s3_storage_options), S3_KILLS)
    assert committed > S3_KILLS // 2
