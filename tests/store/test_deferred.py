"""Deferred async saves: save() returns before the copy; fence() orders changes after it; a
tensor changed before its copy ends is detected and that save dropped, nothing else lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from highmark.errors import ConfigError, StateChangedError
from highmark.state.torch import fence_hooks
from highmark.store.manager import CheckpointManager


def state_of(model: torch.nn.Module) -> dict[str, Any]:
    return {"model": model.state_dict(), "extra": np.arange(4.0)}


def test_async_save_accepts_only_true_false_or_deferred(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="deferred"):
        CheckpointManager(tmp_path / "run", async_save="later")


def test_changes_after_fence_do_not_reach_the_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Linear(64, 64)
    before = model.weight.detach().clone()
    with CheckpointManager(tmp_path / "run", async_save="deferred") as mgr:
        mgr.save(1, state_of(model))
        mgr.fence()
        with torch.no_grad():
            model.weight.add_(1.0)
        mgr.wait()
        assert torch.equal(mgr.restore(1)["model"]["weight"], before)


def test_a_tensor_changed_before_its_copy_drops_that_save_only(tmp_path, held_copy) -> None:
    model = torch.nn.Linear(8, 8)
    with CheckpointManager(tmp_path / "run", async_save="deferred", keep_last=5) as mgr:
        held_copy.set()
        mgr.save(1, state_of(model))
        mgr.wait()
        kept = mgr.restore(1)["model"]["weight"].clone()
        held_copy.clear()
        mgr.save(2, state_of(model))  # returns; its copy is held
        with torch.no_grad():
            model.weight.mul_(2.0)  # no fence: changed before the copy
        held_copy.set()
        with pytest.raises(StateChangedError, match=r"step 2 was not saved: model\.weight") as info:
            mgr.wait()
        assert info.value.names == ["model.weight"]  # the bias did not change
        assert [c.step for c in mgr.checkpoints()] == [1]
        assert torch.equal(mgr.restore(1)["model"]["weight"], kept)
        assert not [n for n in mgr.storage.listdir() if n.startswith(".tmp")]
        mgr.save(3, state_of(model))  # the run goes on: the next save works, no fence stays shut
        mgr.fence()
        mgr.wait()
        assert [c.step for c in mgr.checkpoints()] == [1, 3]


def test_arrays_without_a_version_counter_are_copied_before_save_returns(
    tmp_path, held_copy
) -> None:
    model = torch.nn.Linear(2, 2)
    state = state_of(model)
    with CheckpointManager(tmp_path / "run", async_save="deferred") as mgr:
        mgr.save(1, state)  # the torch copy is held; the numpy one is done
        state["extra"][:] = -1.0
        held_copy.set()
        mgr.wait()
        assert mgr.restore(1)["extra"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_an_optimizer_step_waits_for_the_copy(tmp_path, held_copy) -> None:
    model = torch.nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.randn(4, 16)).sum().backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with CheckpointManager(tmp_path / "run", async_save="deferred") as mgr:
        opt.register_step_pre_hook(lambda *_: held_copy.set())  # the copy starts with the step
        handles = fence_hooks(mgr.fence, [opt, model])
        assert len(handles) == 1  # a Linear holds no buffers: no forward hook
        mgr.save(1, {"model": model.state_dict(), "opt": opt.state_dict()})
        opt.step()  # waits in the fence hook until the copy is taken, then changes the weights
        mgr.wait()  # no StateChangedError
        restored = mgr.restore(1)["model"]
        assert all(torch.equal(restored[k], v) for k, v in before.items())
        assert not torch.equal(model.weight, before["weight"])


def test_a_forward_pass_of_a_model_with_buffers_waits_for_the_copy(tmp_path, held_copy) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with CheckpointManager(tmp_path / "run", async_save="deferred") as mgr:
        model.register_forward_pre_hook(lambda *_: held_copy.set())
        handles = fence_hooks(mgr.fence, [model])
        mgr.save(1, {"model": model.state_dict()})
        model(torch.randn(5, 3))  # updates the running statistics after the fence
        mgr.wait()
        restored = mgr.restore(1)["model"]
        assert torch.equal(restored["1.running_mean"], before["1.running_mean"])
        assert not torch.equal(model[1].running_mean, before["1.running_mean"])
        for handle in handles:
            handle.remove()
