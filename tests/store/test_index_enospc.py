"""A full disk at the index write after a commit, or when opening a writer: the OSError says what
was being done and what is safe, nothing saved is damaged, and the next open with space again
has every committed checkpoint. The disk is a real, tiny tmpfs (mounting one needs root; the
tests are skipped without it)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from highmark.state.tree import flatten
from highmark.store import format as fmt
from highmark.store.index import INDEX
from highmark.store.manager import CheckpointManager

NOTES = 300_000  # bytes of metadata per checkpoint: the index grows by as much per entry


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """Writes a filler file so that about ``leave`` bytes stay free."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free(disk) - leave, 0))
    return filler


def state(step: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((4,), float(step))}


def save(mgr: CheckpointManager, step: int) -> None:
    mgr.save(step, state(step), {"loss": 1.0 / step}, metadata={"notes": "n" * NOTES})


def test_a_full_disk_at_the_index_write_after_a_commit_says_what_is_safe(disk: Path) -> None:
    run = disk / "run"
    mgr = CheckpointManager(run, monitor="loss", keep_last=10)
    for step in (1, 2, 3):
        save(mgr, step)
    # Room for the next checkpoint (the space check asks for its estimate and 1 MiB) but not
    # for the index that lists it (four entries of 300 kB).
    estimate = fmt.estimate_size(flatten(state(4)))
    filler = fill(disk, estimate + (1 << 20) + (64 << 10))
    with pytest.raises(OSError, match="No space left") as info:
        save(mgr, 4)
    assert info.value.errno == errno.ENOSPC
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "failed after step 4 was committed; no checkpoint was deleted" in notes
    assert "the next open re-indexes" in notes
    mgr.close()
    filler.unlink()
    with CheckpointManager(run, monitor="loss", keep_last=10) as again:
        assert [c.step for c in again.checkpoints()] == [1, 2, 3, 4]
        assert again.info(4).metrics == {"loss": 0.25}
        assert again.best is not None
        assert again.best.step == 4
        assert again.verify().ok


@pytest.mark.parametrize(
    ("leave", "stage"), [(0, "taking the writer lock"), (16 << 10, "at open (")]
)
def test_opening_a_writer_on_a_full_disk_says_what_is_safe(
    disk: Path, leave: int, stage: str
) -> None:
    """With no space at all the lock cannot be written; with a little, the index rebuilt at open
    cannot be. Either way the error says so, and the run opens read-only and restores."""
    run = disk / "run"
    with CheckpointManager(run, monitor="loss", keep_last=10) as mgr:
        for step in (1, 2, 3):
            save(mgr, step)
    (run / INDEX).unlink()  # the open rebuilds it and must write it back
    fill(disk, leave)
    with pytest.raises(OSError, match="No space left") as info:
        CheckpointManager(run, monitor="loss")
    assert info.value.errno == errno.ENOSPC
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert stage in notes
    assert "intact" in notes or "no checkpoint was deleted" in notes
    with CheckpointManager(run, monitor="loss", read_only=True) as reader:
        assert [c.step for c in reader.checkpoints()] == [1, 2, 3]
        assert torch.equal(reader.restore("best")["w"], state(3)["w"])
