"""A restored state is freed as soon as its last reference goes, without the garbage collector:
nothing in a restore leaves a reference cycle holding its tensors (or, zero-copy, its files)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from highmark.state.tree import flatten, unflatten
from highmark.store.manager import CheckpointManager


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def state() -> dict[str, Any]:
    return {
        "model": {"w": torch.arange(10_000.0), "layers": [torch.ones(3), (torch.zeros(2), 1)]},
        "opt": {"m": np.arange(5.0), "lr": 0.1},
    }


def test_unflatten_builds_a_tree_freed_without_the_collector(no_gc: None) -> None:
    flat = flatten(state())
    tensors = {k: v.clone() if torch.is_tensor(v) else v.copy() for k, v in flat.tensors.items()}
    watched = weakref.ref(tensors["model.w"])
    tree = unflatten(flat.skeleton, tensors)
    del tensors
    assert watched() is not None
    del tree
    assert watched() is None


@pytest.mark.parametrize("zero_copy", [False, True])
def test_a_restored_state_is_freed_at_its_last_reference(
    tmp_path: Path, no_gc: None, zero_copy: bool
) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        back = mgr.restore(zero_copy=zero_copy)
    watched = [weakref.ref(back["model"]["w"]), weakref.ref(back["model"]["layers"][1][0])]
    del back
    assert [w() for w in watched] == [None, None]


def test_a_zero_copy_restore_unmaps_its_files_at_its_last_reference(
    tmp_path: Path, no_gc: None
) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        back = mgr.restore(zero_copy=True)
        assert "step-00000001/model.safetensors" in Path("/proc/self/maps").read_text()
        del back
        assert "step-00000001" not in Path("/proc/self/maps").read_text()


def test_a_restore_into_keeps_no_reference_to_the_live_tensors(tmp_path: Path, no_gc: None) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state())
        live = {"model": {"w": torch.zeros(10_000)}}
        watched = weakref.ref(live["model"]["w"])
        back = mgr.restore(keys=["model.w"], into=live)
        assert back["model"]["w"] is live["model"]["w"]
        del back, live
        assert watched() is None
