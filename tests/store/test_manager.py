"""CheckpointManager on local disk and S3: save, rank, keep, restore, verify, reconcile."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from highmark.errors import (
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleFormatError,
    InsufficientSpaceError,
    LockedError,
)
from highmark.policy.monitor import Monitor
from highmark.policy.retention import KeepLast, Retention
from highmark.store import format as fmt
from highmark.store.index import INDEX
from highmark.store.manager import CheckpointManager

Factory = Callable[..., CheckpointManager]


def make_state(step: int) -> dict[str, Any]:
    return {
        "model": {"w": torch.full((4, 4), float(step)), "b": torch.arange(3) + step},
        "opt": {"lr": 0.1 * step, "moments": np.full(2, step, dtype=np.float64)},
        "step": step,
    }


def assert_state(state: Any, step: int) -> None:
    want = make_state(step)
    assert torch.equal(state["model"]["w"], want["model"]["w"])
    assert torch.equal(state["model"]["b"], want["model"]["b"])
    assert np.array_equal(state["opt"]["moments"], want["opt"]["moments"])
    assert state["opt"]["lr"] == want["opt"]["lr"]
    assert state["step"] == step


@pytest.fixture
def manager(run_location: Any) -> Iterator[Factory]:
    """Opens managers on the test's run location; closes them all at the end."""
    opened: list[CheckpointManager] = []

    def open_manager(**kwargs: Any) -> CheckpointManager:
        mgr = CheckpointManager(run_location.url, **run_location.kwargs, **kwargs)
        opened.append(mgr)
        return mgr

    yield open_manager
    for mgr in opened:
        mgr.close()


def save_losses(mgr: CheckpointManager, losses: list[float | None], key: str = "loss") -> None:
    for step, loss in enumerate(losses, 1):
        mgr.save(step, make_state(step), None if loss is None else {key: loss})


def steps(mgr: CheckpointManager) -> list[int]:
    return [c.step for c in mgr.checkpoints()]


def on_storage(mgr: CheckpointManager) -> list[int]:
    return sorted(int(n[5:]) for n in mgr.storage.listdir() if n.startswith("step-"))


# ------------------------------------------------------------------ save / restore


def test_restore_latest_returns_the_saved_tree(manager: Factory) -> None:
    mgr = manager()
    mgr.save(3, make_state(3), {"loss": 1.0}, {"epoch": 1})
    assert_state(mgr.restore("latest"), 3)
    assert mgr.info("latest").metadata == {"epoch": 1}


def test_restore_a_part_of_the_tree_by_keys(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    part = mgr.restore(1, keys=["model"])
    assert list(part) == ["model"]
    assert torch.equal(part["model"]["w"], make_state(1)["model"]["w"])


def test_restore_into_fills_existing_tensors_in_place(manager: Factory) -> None:
    mgr = manager()
    mgr.save(2, make_state(2))
    target = {"w": torch.zeros(4, 4), "b": torch.zeros(3, dtype=torch.int64)}
    ptr = target["w"].data_ptr()
    mgr.restore("latest", keys=["model"], into=target)
    assert target["w"].data_ptr() == ptr
    assert torch.equal(target["w"], make_state(2)["model"]["w"])


def test_checkpoints_lists_steps_sizes_and_flags(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=2, keep_last=1)
    save_losses(mgr, [0.5, 0.4, 0.9])
    infos = mgr.checkpoints()
    assert [c.step for c in infos] == [1, 2, 3]
    assert [c.is_best for c in infos] == [False, True, False]
    assert [c.is_latest for c in infos] == [False, False, True]
    assert all(c.size > 0 and c.path.endswith(f"step-{c.step:08d}") for c in infos)


def test_missing_checkpoint_raises_not_found(manager: Factory) -> None:
    mgr = manager()
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint 'latest'"):
        mgr.restore()


def test_saving_an_existing_step_is_refused(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    with pytest.raises(ConfigError, match="force=True"):
        mgr.save(1, make_state(2))


def test_saving_an_existing_step_with_force_replaces_it(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    mgr.save(1, make_state(2), force=True)
    assert mgr.restore(1)["step"] == 2
    assert on_storage(mgr) == [1]


def test_replacing_the_best_with_a_worse_one_reranks(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=2, keep_last=1)
    save_losses(mgr, [0.2, 0.1])
    mgr.save(2, make_state(2), {"loss": 0.9}, force=True)
    assert mgr.best is not None
    assert mgr.best.step == 1
    assert steps(mgr) == [1, 2]


def test_manifest_of_a_checkpoint_names_its_files(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1), {"loss": 0.5})
    manifest = mgr.manifest("latest")
    assert manifest["step"] == 1
    assert {f["name"] for f in manifest["files"]} == {"model.safetensors", "opt.safetensors"}


# ------------------------------------------------------------------ ranking and retention


def test_keep_best_min_keeps_lowest_and_latest(manager: Factory) -> None:
    mgr = manager(monitor="loss", mode="min", keep_best=2, keep_last=1)
    save_losses(mgr, [0.5, 0.2, 0.4, 0.3, 0.9])
    assert steps(mgr) == [2, 4, 5]
    assert on_storage(mgr) == [2, 4, 5]
    assert mgr.best is not None
    assert mgr.best.step == 2


def test_keep_best_max_keeps_highest(manager: Factory) -> None:
    mgr = manager(monitor="acc", mode="max", keep_best=1, keep_last=1)
    save_losses(mgr, [0.5, 0.9, 0.7, 0.6], key="acc")
    assert steps(mgr) == [2, 4]
    assert_state(mgr.restore("best"), 2)


def test_tied_metric_keeps_the_older_as_best(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=1, keep_last=1)
    save_losses(mgr, [0.3, 0.3, 0.3])
    assert mgr.best is not None
    assert mgr.best.step == 1
    assert steps(mgr) == [1, 3]


def test_checkpoint_without_the_metric_is_never_best(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=1, keep_last=1)
    save_losses(mgr, [None, 0.7, None])
    assert mgr.best is not None
    assert mgr.best.step == 2
    assert steps(mgr) == [2, 3]


def test_keep_every_keeps_milestones(manager: Factory) -> None:
    mgr = manager(keep_best=0, keep_last=1, keep_every=2)
    save_losses(mgr, [None] * 5)
    assert steps(mgr) == [2, 4, 5]


def test_max_bytes_trims_kept_checkpoints_but_not_best_or_latest(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=1, keep_last=3)
    save_losses(mgr, [0.1, 0.5])
    size = mgr.checkpoints()[0].size
    mgr.close()
    mgr = manager(monitor="loss", keep_best=1, keep_last=3, max_bytes=2 * size + size // 2)
    mgr.save(3, make_state(3), {"loss": 0.6})
    assert steps(mgr) == [1, 3]


def test_protected_step_is_never_deleted(manager: Factory) -> None:
    mgr = manager(keep_best=0, keep_last=1)
    mgr.save(1, make_state(1))
    mgr.protect(1, "resumed from")
    save_losses_from = [2, 3]
    for step in save_losses_from:
        mgr.save(step, make_state(step))
    assert steps(mgr) == [1, 3]


def test_retention_log_records_why_each_deletion(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_best=1, keep_last=1)
    save_losses(mgr, [0.1, 0.5, 0.6])
    log = json.loads(mgr.storage.read_bytes(INDEX))["retention_log"]
    assert [(e["step"], e["action"]) for e in log] == [(2, "delete")]
    assert "best 1 by loss" in log[0]["reason"]


def test_fresh_process_never_overwrites_the_best_with_a_worse_one(manager: Factory) -> None:
    first = manager(monitor="loss", keep_best=1, keep_last=1)
    save_losses(first, [0.2, 0.5])
    first.close()
    second = manager(monitor="loss", keep_best=1, keep_last=1)
    second.save(3, make_state(3), {"loss": 0.9})
    assert second.best is not None
    assert second.best.step == 1
    assert steps(second) == [1, 3]
    assert_state(second.restore("best"), 1)


def test_reopening_without_a_monitor_keeps_the_recorded_ranking(manager: Factory) -> None:
    first = manager(monitor=Monitor("loss", mode="max"), keep_best=2, keep_last=1)
    save_losses(first, [0.2, 0.9, 0.5])
    first.close()
    second = manager()
    assert second.monitor is not None
    assert second.monitor.config() == Monitor("loss", mode="max").config()
    assert second.best is not None
    assert second.best.step == 2
    second.close()
    index = json.loads(second.storage.read_bytes(INDEX))
    assert index["ranking"]["best_step"] == 2


def test_best_follows_the_monitor_min_delta_like_the_stopper(manager: Factory) -> None:
    mgr = manager(monitor=Monitor("loss", min_delta=0.1), keep_best=1, keep_last=1)
    save_losses(mgr, [1.0, 0.95, 0.88])
    assert mgr.best is not None
    assert mgr.best.step == 3


def test_prune_dry_run_deletes_nothing(manager: Factory) -> None:
    mgr = manager(keep_best=0, keep_last=5)
    save_losses(mgr, [None] * 4)
    decision = mgr.prune(Retention([KeepLast(1)]), dry_run=True)
    assert sorted(decision.delete) == [1, 2, 3]
    assert steps(mgr) == [1, 2, 3, 4]


def test_prune_applies_a_retention(manager: Factory) -> None:
    mgr = manager(keep_best=0, keep_last=5)
    save_losses(mgr, [None] * 4)
    mgr.prune(Retention([KeepLast(2)]))
    assert steps(mgr) == [3, 4]
    assert on_storage(mgr) == [3, 4]


# ------------------------------------------------------------------ async


def test_async_save_restores_the_state_at_save_time(manager: Factory) -> None:
    mgr = manager(async_save=True, keep_last=2)
    state = make_state(1)
    mgr.save(1, state)
    state["model"]["w"].fill_(-1.0)  # changed after save() returned: must not leak in
    mgr.wait()
    assert_state(mgr.restore("latest"), 1)


def test_async_saves_commit_in_order_and_apply_retention(manager: Factory) -> None:
    mgr = manager(monitor="loss", async_save=True, keep_best=1, keep_last=1)
    save_losses(mgr, [0.3, 0.1, 0.4, 0.5])
    mgr.wait()
    assert steps(mgr) == [2, 4]


def _fail_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk cannot be caused on demand here (and never on S3): simulate ENOSPC mid-write.
    real = fmt.write_checkpoint

    def write_then_fail(storage: Any, ckpt_dir: str, *args: Any, **kwargs: Any) -> Any:
        real(storage, ckpt_dir, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt, "write_checkpoint", write_then_fail)


def test_async_failure_surfaces_at_the_next_save(
    manager: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = manager(async_save=True)
    _fail_writes(monkeypatch)
    mgr.save(1, make_state(1))
    with pytest.raises(OSError, match="No space left") as caught:
        mgr.save(2, make_state(2))
    assert any("step 1" in note for note in caught.value.__notes__)


def test_async_failure_surfaces_at_wait(manager: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = manager(async_save=True)
    _fail_writes(monkeypatch)
    mgr.save(1, make_state(1))
    with pytest.raises(OSError, match="No space left"):
        mgr.wait()


def test_async_failure_surfaces_at_close(manager: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = manager(async_save=True)
    _fail_writes(monkeypatch)
    mgr.save(1, make_state(1))
    with pytest.raises(OSError, match="No space left"):
        mgr.close()


# ------------------------------------------------------------------ failures and safety


def test_failed_write_cleans_up_and_keeps_earlier_checkpoints(
    manager: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = manager(keep_last=1)
    mgr.save(1, make_state(1))
    _fail_writes(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        mgr.save(2, make_state(2))
    monkeypatch.undo()
    assert steps(mgr) == [1]
    assert [n for n in mgr.storage.listdir() if n.startswith((".tmp", "step-"))] == [
        "step-00000001"
    ]
    assert_state(mgr.restore("latest"), 1)


def test_insufficient_space_is_refused_before_writing(
    manager: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr = manager()
    # A disk with too little space cannot be provided here: report 1 KiB free.
    monkeypatch.setattr(mgr.storage, "free_bytes", lambda: 1024)
    before = mgr.storage.listdir()
    with pytest.raises(InsufficientSpaceError, match="step 5 needs about"):
        mgr.save(5, make_state(5))
    assert mgr.storage.listdir() == before


def test_second_writer_gets_locked_error(manager: Factory) -> None:
    manager()
    with pytest.raises(LockedError, match="locked by"):
        manager()


def test_read_only_opens_while_a_writer_holds_the_run(manager: Factory) -> None:
    writer = manager()
    writer.save(1, make_state(1))
    reader = manager(read_only=True)
    assert_state(reader.restore(), 1)
    with pytest.raises(ConfigError, match="read-only"):
        reader.save(2, make_state(2))


def test_lock_is_released_at_close(manager: Factory) -> None:
    manager().close()
    manager().save(1, make_state(1))


# ------------------------------------------------------------------ open: leftovers and index


def test_open_removes_leftovers_of_an_interrupted_save(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    staging = mgr.storage.staging_dir("step-00000002")
    mgr.storage.write_bytes(f"{staging}/model.safetensors", b"partial")
    mgr.close()
    mgr = manager()
    assert [n for n in mgr.storage.listdir() if n.startswith((".tmp", "step-"))] == [
        "step-00000001"
    ]
    assert steps(mgr) == [1]


def test_open_reindexes_a_committed_dir_missing_from_the_index(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_last=3)
    save_losses(mgr, [0.5, 0.3])
    index = json.loads(mgr.storage.read_bytes(INDEX))
    index["checkpoints"] = [c for c in index["checkpoints"] if c["step"] != 2]
    mgr.storage.replace_atomic(INDEX, json.dumps(index).encode())  # crash before index write
    mgr.close()
    mgr = manager(monitor="loss", keep_last=3)
    assert steps(mgr) == [1, 2]
    assert mgr.info(2).metrics == {"loss": 0.3}
    assert mgr.best is not None
    assert mgr.best.step == 2


def test_open_reranks_when_the_missing_dir_was_the_new_best(manager: Factory) -> None:
    mgr = manager(monitor="loss", keep_last=3)
    save_losses(mgr, [0.5])
    before = mgr.storage.read_bytes(INDEX)  # the index as it was before step 2 was committed
    mgr.save(2, make_state(2), {"loss": 0.3})
    mgr.storage.replace_atomic(INDEX, before)  # a crash between commit and index write
    mgr.close()
    mgr = manager(monitor="loss", keep_last=3)
    assert steps(mgr) == [1, 2]
    assert mgr.best is not None
    assert mgr.best.step == 2
    assert json.loads(mgr.storage.read_bytes(INDEX))["ranking"]["best_step"] == 2


def test_open_drops_index_entries_whose_dir_is_gone(
    manager: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = manager(keep_last=3)
    save_losses(mgr, [None, None])
    mgr.close()
    mgr.storage.remove_tree("step-00000001")
    with caplog.at_level(logging.WARNING, logger="highmark"):
        mgr = manager(keep_last=3)
    assert steps(mgr) == [2]
    assert "step-00000001" in caplog.text


def test_index_of_a_newer_format_is_refused_naming_both_versions(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    mgr.storage.replace_atomic(INDEX, json.dumps({"format": 99, "checkpoints": []}).encode())
    mgr.close()
    with pytest.raises(IncompatibleFormatError, match=r"format 99.*format 1"):
        manager()


def test_damaged_index_is_rebuilt_from_the_directory(manager: Factory) -> None:
    mgr = manager(keep_last=3)
    save_losses(mgr, [None, None])
    mgr.storage.replace_atomic(INDEX, b"{not json")
    mgr.close()
    assert steps(manager(keep_last=3)) == [1, 2]


# ------------------------------------------------------------------ damage


def _damage(mgr: CheckpointManager, step: int) -> str:
    rel = f"step-{step:08d}/model.safetensors"
    data = bytearray(mgr.storage.read_bytes(rel))
    data[-1] ^= 0xFF
    mgr.storage.write_bytes(rel, bytes(data))
    return rel


def test_verify_reports_damage_without_raising(manager: Factory) -> None:
    mgr = manager(keep_last=2)
    save_losses(mgr, [None, None])
    assert mgr.verify().ok
    _damage(mgr, 2)
    report = mgr.verify()
    assert not report.ok
    assert [c.ok for c in report.checkpoints] == [True, False]
    assert report.damaged[0][0].endswith("step-00000002/model.safetensors")


def test_restore_of_a_damaged_checkpoint_names_the_file(manager: Factory) -> None:
    mgr = manager(keep_last=2)
    save_losses(mgr, [None, None])
    _damage(mgr, 2)
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors"):
        mgr.restore("latest")


def test_restore_with_fallback_returns_the_newest_intact_one(
    manager: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = manager(keep_last=3)
    save_losses(mgr, [None, None, None])
    _damage(mgr, 3)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        state = mgr.restore("latest", fallback=True)
    assert_state(state, 2)
    assert "falling back" in caplog.text


def test_missing_file_is_reported_and_refused(manager: Factory) -> None:
    mgr = manager()
    mgr.save(1, make_state(1))
    mgr.storage.remove("step-00000001/opt.safetensors")
    assert not mgr.verify().ok
    with pytest.raises(CorruptCheckpointError, match=r"opt\.safetensors"):
        mgr.restore()
