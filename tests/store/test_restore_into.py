"""A restore into live tensors verifies every byte before any byte reaches them.

Each damage is real: a byte of a real checkpoint file flipped, or the file cut short, on local
disk (verify, then copy) and in the in-memory store (read into host tensors, then assigned).
After every refused restore the live tensors must hold exactly the bytes they held before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from highmark.errors import CheckpointError
from highmark.state.tree import flatten, tensor_leaves
from highmark.store import format as fmt
from highmark.store.local import LocalStorage
from highmark.store.manager import CheckpointManager
from highmark.store.objectstore import MemoryStorage
from highmark.store.readjobs import CHUNK_BYTES
from highmark.store.restore import read_checkpoint
from highmark.store.storage import Storage

CKPT = "step-00000001"


def saved_state(seed: int) -> dict[str, Any]:
    """Every kind of tensor a live state holds, filled with values that differ by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {
            "w": torch.randn(16, 9, generator=g),
            "b": torch.randn(5, generator=g),
            "h": torch.randn(3, generator=g).to(torch.bfloat16),
            "t": torch.randn(4, 6, generator=g),
        },
        "opt": {"m": np.arange(7.0) * (seed + 1), "step": torch.tensor(seed + 3)},
    }


def live_state() -> dict[str, Any]:
    """Zeroed live tensors of the same shapes; ``t`` is non-contiguous (read, then assigned)."""
    return {
        "model": {
            "w": torch.zeros(16, 9),
            "b": torch.zeros(5),
            "h": torch.zeros(3, dtype=torch.bfloat16),
            "t": torch.zeros(6, 4).T,
        },
        "opt": {"m": np.zeros(7), "step": torch.tensor(0)},
    }


def snapshot(tree: Any) -> dict[str, bytes]:
    """The bytes every tensor of ``tree`` holds now."""
    out = {}
    for path, (leaf, _) in tensor_leaves(tree).items():
        array = (
            leaf.reshape(-1).contiguous().view(torch.uint8).numpy()
            if torch.is_tensor(leaf)
            else leaf
        )
        out[path] = np.ascontiguousarray(array).tobytes()
    return out


def put(storage: Storage, rel: str, data: bytes) -> None:
    """Replaces a file's bytes (on local disk without fsync, to keep thousands of cases fast)."""
    if isinstance(storage, LocalStorage):
        Path(storage.local_path(rel) or "").write_bytes(data)
    else:
        storage.write_bytes(rel, data)


def restore_into(storage: Storage, into: Any, ckpt: str = CKPT) -> Any:
    return read_checkpoint(storage, ckpt, fmt.read_manifest(storage, ckpt), into=into)


@pytest.fixture(params=["local", "memory"])
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A store holding ``saved_state(1)`` as checkpoint ``CKPT``."""
    storage: Storage = (
        LocalStorage(tmp_path / "run") if request.param == "local" else MemoryStorage()
    )
    fmt.write_checkpoint(
        storage, CKPT, flatten(saved_state(1)), step=1, metrics={}, metadata={}, created=0.0
    )
    return storage


def checkpoint_files(storage: Storage) -> list[str]:
    return [f"{CKPT}/{name}" for name in sorted(storage.listdir(CKPT))]


def test_an_intact_checkpoint_fills_every_live_tensor(saved: Storage) -> None:
    live = live_state()
    restore_into(saved, live)
    assert snapshot(live) == snapshot(saved_state(1))


def test_no_flipped_byte_anywhere_reaches_a_live_tensor(saved: Storage) -> None:
    live = live_state()
    before = snapshot(live)
    for rel in checkpoint_files(saved):  # the tensor files and the manifest
        good = saved.read_bytes(rel)
        for at in range(len(good)):
            damaged = bytearray(good)
            damaged[at] ^= 0xFF
            put(saved, rel, bytes(damaged))
            with pytest.raises(CheckpointError):
                restore_into(saved, live)
            assert snapshot(live) == before, f"{rel}: byte {at} flipped reached a live tensor"
        put(saved, rel, good)


def test_no_truncation_to_any_length_reaches_a_live_tensor(saved: Storage) -> None:
    live = live_state()
    before = snapshot(live)
    for rel in checkpoint_files(saved):
        good = saved.read_bytes(rel)
        for length in range(len(good)):
            if good[:length].rstrip() == good.rstrip():
                continue  # only the manifest's final newline is gone: the same JSON
            put(saved, rel, good[:length])
            with pytest.raises(CheckpointError):
                restore_into(saved, live)
            assert snapshot(live) == before, f"{rel} cut to {length} bytes reached a live tensor"
        put(saved, rel, good)


def large_state(value: float) -> dict[str, Any]:
    """Two files of tensors read in several pieces on several threads (over 16 MiB in all)."""
    big = CHUNK_BYTES // 4 * 3 + 5  # three pieces and a bit
    return {
        "model": {f"w{i}": torch.full((big,), value + i) for i in range(3)},
        "opt": {f"m{i}": torch.full((big,), -value - i) for i in range(3)},
    }


def flips_of_large(storage: Storage, rel: str) -> list[int]:
    """Positions in a large file: the header, the first and last byte of every tensor and of
    every piece it is read in, and the file's last byte."""
    manifest = fmt.read_manifest(storage, CKPT)
    file = next(f for f in manifest["files"] if rel.endswith(f["name"]))
    start = int(file["data_start"])
    at = {0, 7, 8, start // 2, start - 1, int(file["size"]) - 1}
    for t in file["tensors"]:
        begin, end = (start + o for o in t["data_offsets"])
        at.update(range(begin, end, CHUNK_BYTES))
        at.update(p - 1 for p in range(begin + CHUNK_BYTES, end, CHUNK_BYTES))
        at.update({begin, end - 1})
    return sorted(at)


def test_a_flip_in_a_large_checkpoint_read_on_threads_never_reaches_a_live_tensor(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "run")
    fmt.write_checkpoint(
        storage, CKPT, flatten(large_state(1.0)), step=1, metrics={}, metadata={}, created=0.0
    )
    live = large_state(0.0)
    before = snapshot(live)
    for rel in checkpoint_files(storage):
        if not rel.endswith(".safetensors"):
            continue
        path = Path(storage.local_path(rel) or "")
        for at in flips_of_large(storage, rel):
            with path.open("r+b") as f:  # flip one byte in place, and back after
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([byte[0] ^ 0xFF]))
            with pytest.raises(CheckpointError):
                restore_into(storage, live)
            assert snapshot(live) == before, f"{rel}: byte {at} flipped reached a live tensor"
            with path.open("r+b") as f:
                f.seek(at)
                f.write(byte)
    restore_into(storage, live)
    assert snapshot(live) == snapshot(large_state(1.0))


# ------------------------------------------------------------------ with the manager's fallback


def damage(storage: Storage, rel: str, how: str) -> None:
    data = storage.read_bytes(rel)
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        at = {"first": 0, "header": 20, "last": len(data) - 1}[how]
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    storage.write_bytes(rel, data)


@pytest.mark.parametrize("how", ["first", "header", "last", "truncate"])
@pytest.mark.parametrize("name", ["model.safetensors", "opt.safetensors", "manifest.json"])
def test_fallback_fills_the_live_tensors_from_the_previous_good_checkpoint(
    run_location: Any, name: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    with CheckpointManager(run_location.url, **run_location.kwargs, keep_last=2) as mgr:
        mgr.save(1, saved_state(1))
        mgr.save(2, saved_state(2))
        damage(mgr.storage, f"step-00000002/{name}", how)
        live = live_state()
        with caplog.at_level(logging.WARNING, logger="highmark"):
            mgr.restore("latest", into=live, fallback=True)
    assert snapshot(live) == snapshot(saved_state(1))
    assert "step-00000002" in caplog.text


def test_without_fallback_a_damaged_checkpoint_leaves_the_live_tensors_as_they_were(
    run_location: Any,
) -> None:
    with CheckpointManager(run_location.url, **run_location.kwargs, keep_last=2) as mgr:
        mgr.save(1, saved_state(1))
        mgr.save(2, saved_state(2))
        live = live_state()
        mgr.restore(1, into=live)
        damage(mgr.storage, "step-00000002/model.safetensors", "last")
        with pytest.raises(CheckpointError, match=r"step-00000002/model\.safetensors"):
            mgr.restore("latest", into=live)
    assert snapshot(live) == snapshot(saved_state(1))
