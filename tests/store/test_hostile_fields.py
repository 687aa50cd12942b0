"""Crafted manifests (with a valid checksum, as a careful attacker would write them): every field
is validated before anything is built from it, so each is refused with CorruptCheckpointError
naming the manifest, never numpy's or torch's raw error, and a restore with fallback falls back."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

from highmark.errors import CorruptCheckpointError
from highmark.store.checks import MAX_DIMS, MAX_HEADER, canonical, hex64
from highmark.store.format import MANIFEST, read_manifest, verify_checkpoint
from highmark.store.local import LocalStorage
from highmark.store.manager import CheckpointManager

STEP = "step-00000002"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Two checkpoints of a numpy state; step 2 is the one the tests craft."""
    path = tmp_path / "run"
    with CheckpointManager(path, keep_last=2) as mgr:
        mgr.save(1, {"a": {"x": np.arange(4, dtype=np.float32)}})
        mgr.save(2, {"a": {"x": np.arange(4, dtype=np.float32) * 2}})
    return path


def craft(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    rel = path / STEP / MANIFEST
    manifest = json.loads(rel.read_bytes())
    change(manifest)
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    rel.write_text(json.dumps(manifest))


def tensor(m: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = m["files"][0]["tensors"][0]
    return entry


def reshape(shape: list[int]) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        tensor(m)["shape"] = shape

    return change


def set_field(where: Callable[[dict[str, Any]], dict[str, Any]], **values: Any) -> Any:
    return lambda m: where(m).update(values)


CRAFTED = {
    # 16 bytes as 70 dimensions: the byte length matches, numpy refuses more than 64.
    "70 dimensions": (reshape([1] * 68 + [2, 2]), f"limit of {MAX_DIMS}"),
    "65 dimensions": (reshape([1] * 61 + [2, 2, 1, 1]), f"limit of {MAX_DIMS}"),
    "empty, too large to index": (reshape([0, 1 << 62, 1 << 62]), "more elements"),
    "a dimension over int64": (reshape([0, 1 << 64]), "more elements"),
    "a bool dimension": (reshape([True, 4]), "invalid shape"),
    "a nested shape": (reshape([[4]]), "invalid shape"),
    "xxh3 with a newline": (set_field(tensor, xxh3="0123456789abcdef\n"), "xxh3"),
    "xxh3 in capitals": (set_field(tensor, xxh3="0123456789ABCDEF"), "xxh3"),
    "dtype not a string": (set_field(tensor, dtype=["float32"]), "dtype"),
    "file xxh3 with a newline": (
        set_field(lambda m: m["files"][0], xxh3="0123456789abcdef\n"),
        "size/data_start/xxh3",
    ),
    "data start past the header limit": (
        set_field(lambda m: m["files"][0], data_start=MAX_HEADER + 16, size=MAX_HEADER + 32),
        "size/data_start/xxh3",
    ),
    "created too large for a float": (lambda m: m.update(created=10**400), "created"),
    "created infinite": (lambda m: m.update(created=float("inf")), "created"),
    "tensor kind a list": (
        lambda m: m.update(skeleton={"dict": [["a", {"dict": [["x", {"tensor": ["numpy"]}]]}]]}),
        "bad tensor node",
    ),
    "scalar flag not true": (
        lambda m: m.update(
            skeleton={"dict": [["a", {"dict": [["x", {"tensor": "numpy", "scalar": [1]}]]}]]}
        ),
        "bad tensor node",
    ),
    "dict entry not a pair": (
        lambda m: m.update(skeleton={"dict": [["a", {"dict": [["x"]]}]]}),
        "bad dict entry",
    ),
    "file name not a string": (set_field(lambda m: m["files"][0], name={"a": [1]}), "unsafe"),
    "tensor name not a string": (set_field(tensor, name=[1, 2]), "not in the skeleton"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_manifest_field_is_refused_before_use(run: Path, case: str) -> None:
    change, match = CRAFTED[case]
    craft(run, change)
    storage = LocalStorage(run)
    with pytest.raises(CorruptCheckpointError, match=match) as info:
        read_manifest(storage, STEP)
    assert info.value.path == f"{STEP}/{MANIFEST}"
    assert [rel for rel, _ in verify_checkpoint(storage, STEP)] == [info.value.path]


@pytest.mark.parametrize(
    "case", ["70 dimensions", "empty, too large to index", "tensor kind a list"]
)
def test_restore_with_fallback_skips_a_crafted_checkpoint(
    run: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    craft(run, CRAFTED[case][0])
    mgr = CheckpointManager(run, read_only=True)
    with pytest.raises(CorruptCheckpointError):
        mgr.restore(2)
    with caplog.at_level(logging.WARNING, logger="highmark"):
        back = mgr.restore(2, fallback=True)
    assert np.array_equal(back["a"]["x"], np.arange(4, dtype=np.float32))
    assert "falling back" in caplog.text


def test_a_metric_too_large_for_a_float_is_indexed_as_nan(run: Path) -> None:
    """A manifest's metrics are not validated as numbers (old ones are kept): an int beyond a
    float's range is indexed as NaN (never best) rather than crashing the open."""
    craft(run, lambda m: m.update(metrics={"loss": 10**400}))
    (run / "highmark.json").unlink()
    mgr = CheckpointManager(run, monitor="loss", read_only=True)
    assert [c.step for c in mgr.checkpoints()] == [1, 2]
    assert np.isnan(mgr.info(2).metrics["loss"])
