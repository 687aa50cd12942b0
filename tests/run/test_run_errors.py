"""Errors a Run user meets at the start: they say what is wrong and what to do; nothing is lost."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from run_helpers import TinyModel, nudge

from highmark import CheckpointManager, Run, errors
from highmark.errors import ConfigError
from highmark.store.runfiles import read_history, read_run_info


class WiderModel(TinyModel):
    """TinyModel's keys with a hidden layer of 5 instead of 3."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 5)
        self.out = torch.nn.Linear(5, 1)


class DeeperModel(TinyModel):
    """TinyModel plus one more layer: a key the checkpoint does not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = torch.nn.Linear(1, 1)


def train(directory: Path, model: torch.nn.Module, epochs: int) -> Run:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with Run(directory, patience=1, async_save=False) as run:
        run.track(model=model, optimizer=opt)
        for epoch in run.epochs(epochs):
            nudge(model, opt)
            run.report(val_loss=1.0 / (epoch + 1))
    return run


def test_resuming_into_a_model_of_another_shape_names_the_key_and_both_shapes(
    tmp_path: Path,
) -> None:
    train(tmp_path / "r", TinyModel(), 2)
    with pytest.raises(ConfigError) as info:
        train(tmp_path / "r", WiderModel(), 4)
    message = str(info.value)
    assert "model.fc.weight is [3, 4] in the checkpoint but [5, 4] now" in message
    assert "new directory" in message
    assert "resume=False" in message


def test_resuming_into_a_model_with_other_keys_is_a_config_error(tmp_path: Path) -> None:
    train(tmp_path / "r", TinyModel(), 2)
    with pytest.raises(ConfigError, match=r"does not load into 'model'.*extra\.weight") as info:
        train(tmp_path / "r", DeeperModel(), 4)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_failed_resume_leaves_run_json_and_the_history_as_they_were(tmp_path: Path) -> None:
    train(tmp_path / "r", TinyModel(), 2)
    before = (tmp_path / "r" / "run.json").read_bytes()
    history = read_history(tmp_path / "r")
    with pytest.raises((ConfigError, RuntimeError)):  # which error: the tests above
        train(tmp_path / "r", WiderModel(), 4)
    assert (tmp_path / "r" / "run.json").read_bytes() == before  # not marked "failed"
    assert read_history(tmp_path / "r") == history
    resumed = train(tmp_path / "r", TinyModel(), 4)  # the right model still resumes
    assert (resumed.resumed_from, resumed.status) == (1, "budget")
    info = read_run_info(tmp_path / "r")
    assert info is not None
    assert info["status"] == "budget"


def _mount_tmpfs(where: Path) -> bool:
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)])
    return done.returncode == 0


@pytest.fixture
def read_only_run(tmp_path: Path) -> Iterator[Path]:
    """A finished run directory on storage that refuses writes, made read-only for real.

    As root (where permissions do not stop writes) it lives on a tmpfs mounted here and then
    remounted read-only, so opening ``.lock`` fails with EROFS; as another user the directory
    and its files lose their write permission (EACCES). Skipped where root cannot mount.
    """
    base = tmp_path / "ro"
    base.mkdir()
    as_root = os.geteuid() == 0
    if as_root and not _mount_tmpfs(base):
        pytest.skip("running as root without the right to mount a tmpfs (CAP_SYS_ADMIN)")
    try:
        train(base / "run", TinyModel(), 2)
        if as_root:
            subprocess.run(["mount", "-o", "remount,ro", str(base)], check=True)
        else:
            for path in [base / "run", *(base / "run").rglob("*")]:
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        yield base / "run"
    finally:
        if as_root:
            subprocess.run(["umount", "-l", str(base)], check=True)
        else:
            for path in [base / "run", *(base / "run").rglob("*")]:
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_run_directory_on_read_only_storage_says_how_to_read_it(read_only_run: Path) -> None:
    with pytest.raises(errors.ReadOnlyError) as info:
        Run(read_only_run)
    message = str(info.value)
    assert str(read_only_run) in message
    assert "read-only" in message or "not writable" in message
    assert "read_only=True" in message
    assert "highmark ls" in message
    assert isinstance(info.value, OSError)
    assert info.value.errno is not None


def test_a_read_only_run_directory_opens_with_read_only_true(read_only_run: Path) -> None:
    with CheckpointManager(read_only_run, read_only=True) as ckpt:
        assert [c.step for c in ckpt.checkpoints()] == [0, 1]
