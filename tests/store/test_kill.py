"""SIGKILL at random moments of the save path never leaves a broken or inconsistent store."""

from __future__ import annotations

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

CHILD = str(Path(__file__).with_name("kill_child.py"))
KILLS = 55


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


def run_child_and_kill(url: str, seed: int, start: int, rng: random.Random) -> int | None:
    """Starts a saving child, kills it after a random number of commits; returns the last one."""
    use_async = "1" if seed % 2 else "0"
    child = subprocess.Popen(
        [sys.executable, CHILD, url, str(seed), str(start), use_async],
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


@pytest.mark.slow
def test_sigkill_during_saves_leaves_the_last_committed_state(tmp_path: Path) -> None:
    url = str(tmp_path / "run")
    rng = random.Random(20261125)
    start, committed_ever, mid_write = 0, None, 0
    for seed in range(KILLS):
        last = run_child_and_kill(url, seed, start, rng)
        committed_ever = last if last is not None else committed_ever
        run_dir = Path(url)
        mid_write += any(p.name.startswith(".tmp-") for p in run_dir.iterdir())
        with CheckpointManager(url, keep_best=0, keep_last=2) as mgr:
            report = mgr.verify()
            assert report.ok, report.damaged
            assert not [n for n in mgr.storage.listdir() if n.startswith(".tmp")]
            latest = mgr.latest
            if committed_ever is not None:
                assert latest is not None
                assert latest.step >= committed_ever
            if latest is not None:
                assert_same(mgr.restore("latest"), state_for(latest.step))
                start = latest.step + 1
    assert committed_ever is not None
    assert committed_ever > KILLS // 2
    assert mid_write > 0  # some kills landed while a checkpoint was being written
    print(f"{KILLS} kills, {mid_write} mid-write, {committed_ever} steps committed")
