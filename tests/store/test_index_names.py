"""Checkpoint directories are recognised by their exact name: ``step-`` and the step's ASCII digits,
zero-padded to 8, nothing before or after (no trailing newline, no other digits)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from highmark.store.index import parse_step_dir, step_dir
from highmark.store.manager import CheckpointManager

LOOKALIKES = [
    "step-00000007\n",  # what "^...$" let through: "$" also matches before a final newline
    "step-00000007\r",
    "step-00000007 ",
    " step-00000007",
    "step-\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff17",  # fullwidth digits: \d matches them
    "step-\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0667",  # Arabic-Indic digits
    "step-000000007",  # the right digits, padded differently: a second name for step 7
    "step-0000007",
    "step-00000007.bak",
    "Step-00000007",
]


@pytest.mark.parametrize("name", LOOKALIKES)
def test_a_lookalike_of_a_step_name_is_not_a_step(name: str) -> None:
    assert parse_step_dir(name) is None


@pytest.mark.parametrize("step", [0, 7, 12_345_678, 99_999_999, 100_000_000, 10**15])
def test_the_name_of_every_step_is_read_back_as_that_step(step: int) -> None:
    assert parse_step_dir(step_dir(step)) == step


@given(name=st.text(alphabet=st.sampled_from("step-0123456789\n \uff10\u0667"), max_size=20))
def test_a_name_is_a_step_only_when_it_is_that_steps_name(name: str) -> None:
    step = parse_step_dir(name)
    assert step is None or step_dir(step) == name


def test_lookalike_checkpoint_dirs_are_not_indexed(tmp_path: Path) -> None:
    """Copies of a real committed checkpoint under lookalike names: the run holds, restores and
    verifies only its real checkpoint, read-only or not, and deletes none of the copies."""
    path = tmp_path / "run"
    with CheckpointManager(path, keep_last=5) as mgr:
        mgr.save(3, {"w": torch.ones(2)})
    for name in LOOKALIKES:
        shutil.copytree(path / step_dir(3), path / name)
    (path / "highmark.json").unlink()  # the open must list the directory to rebuild
    for read_only in (True, False):
        with CheckpointManager(path, read_only=read_only) as mgr:
            assert [c.step for c in mgr.checkpoints()] == [3]
            assert mgr.verify().ok
            assert torch.equal(mgr.restore()["w"], torch.ones(2))
    assert all((path / name).is_dir() for name in LOOKALIKES)
