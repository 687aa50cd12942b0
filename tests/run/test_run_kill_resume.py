"""Kill-and-resume exactness: SIGKILL a real training run at many points, resume, compare bits."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import Child, assert_bit_identical, load_weights, run_child

from highmark import CheckpointManager
from highmark.store.runfiles import read_history


def _marker_key(line: str) -> str:
    # "log <dir>: saving epoch 3 (best)" names the run directory; compare what follows it
    return line.split(": ", 1)[1] if line.startswith("log ") else line


def _kill_markers(lines: list[str], seed: int = 7) -> list[str]:
    """Twelve kill points from the uninterrupted run's output: 8 batches and 4 saves."""
    events = [_marker_key(x) for x in lines if x.startswith(("batch ", "log "))]
    events = [e for e in events if e.startswith(("batch ", "saving "))]
    body = events[: int(len(events) * 0.95)]  # leave the last few for the final child
    rng = random.Random(seed)
    saves = [i for i, e in enumerate(body) if e.startswith("saving ")]
    batches = [i for i, e in enumerate(body) if e.startswith("batch ")]
    chosen = sorted(set(rng.sample(saves, 4)) | set(rng.sample(batches, 8)))
    return [body[i] for i in chosen]


def _model_at(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    with CheckpointManager(run_dir, read_only=True) as ckpt:
        return dict(ckpt.restore(step, keys=["model"])["model"])


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_identical(
    tmp_path: Path, reference_run: Callable[..., dict[str, Any]]
) -> None:
    reference = reference_run("--log-saves")
    markers = _kill_markers(reference["lines"])
    assert len(markers) >= 10
    run_dir, out = tmp_path / "run", tmp_path / "final.safetensors"
    during_save = 0
    for marker in markers:
        child = Child(run_dir, out, "--log-saves")
        hit = child.read_until(lambda line, m=marker: _marker_key(line) == m)
        assert hit is not None, f"the child never reached {marker!r}:\n{child.output}"
        child.kill()
        leftovers = [n for n in os.listdir(run_dir) if n.startswith(".tmp")]
        during_save += bool(leftovers)
    code, child = run_child(run_dir, out, "--log-saves")
    assert code == 0, child.output
    done = [line for line in child.lines if line.startswith("done ")]
    assert done == [reference["done"]]  # same best step, stop step and epochs
    assert_bit_identical(load_weights(out), reference["weights"])
    best_step = int(reference["done"].split()[1])  # the stopper's best: a checkpoint is kept
    assert_bit_identical(_model_at(run_dir, best_step), _model_at(reference["dir"], best_step))
    with CheckpointManager(run_dir, read_only=True) as ckpt:
        assert ckpt.verify().ok
    history = [(h["step"], h["metrics"]) for h in read_history(run_dir)]
    assert history == [(h["step"], h["metrics"]) for h in read_history(reference["dir"])]
    print(f"{len(markers)} SIGKILLs, {during_save} left an interrupted save behind; bit-identical")
