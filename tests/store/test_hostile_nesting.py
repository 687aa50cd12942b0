"""Hostile and extreme nesting: refused with a typed error naming the limit (tree.MAX_DEPTH), never
a raw RecursionError; a run whose index or one manifest is hostile still opens from its other
files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError, UnsupportedStateError
from highmark.state.skeleton import MAX_DEPTH
from highmark.state.tree import flatten, tensor_leaves
from highmark.store.checks import canonical, hex64
from highmark.store.format import MANIFEST, read_manifest, verify_checkpoint, write_checkpoint
from highmark.store.index import INDEX
from highmark.store.local import LocalStorage
from highmark.store.manager import CheckpointManager


def nested(depth: int, leaf: Any, pad: str = "") -> Any:
    """``depth`` dicts (and lists, alternately) around ``leaf``; with ``pad``, each level also
    holds that string (a document nested deep that is not dense: cheap to parse)."""
    node = leaf
    for level in range(depth):
        node = {"a": node, "pad": pad} if level % 2 else [node, pad]
    return node


def saved_run(path: Path) -> None:
    with CheckpointManager(path, monitor="loss", keep_last=3) as mgr:
        for step, loss in ((1, 0.5), (2, 0.25), (3, 0.75)):
            mgr.save(step, {"w": torch.ones(2) * step}, {"loss": loss})


def reseal(path: Path, change: Any) -> None:
    """Edit a manifest and give it a valid checksum again (a careful attacker)."""
    manifest = json.loads(path.read_bytes())
    change(manifest)
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 340, 5000])
def test_a_state_nested_deeper_than_the_limit_is_refused_at_save(
    tmp_path: Path, depth: int
) -> None:
    with CheckpointManager(tmp_path / "run") as mgr:
        with pytest.raises(UnsupportedStateError, match=f"deeper than {MAX_DEPTH} levels") as info:
            mgr.save(1, {"model": nested(depth - 1, torch.ones(1))})
        assert info.value.path.startswith("model.")
        assert mgr.checkpoints() == []
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("step-")] == []


def test_a_state_nested_exactly_to_the_limit_saves_and_restores(tmp_path: Path) -> None:
    state = {"model": nested(MAX_DEPTH - 1, torch.arange(3.0))}
    with CheckpointManager(tmp_path / "run") as mgr:
        mgr.save(1, state)
    with CheckpointManager(tmp_path / "run", read_only=True) as mgr:
        back = mgr.restore()
        assert mgr.verify().ok
    ((_, (tensor, _)),) = tensor_leaves(back).items()
    assert torch.equal(tensor, torch.arange(3.0))


def test_restoring_into_a_tree_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedStateError, match="deeper than"):
        tensor_leaves({"model": nested(MAX_DEPTH + 5, torch.ones(1))})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900])
def test_metadata_nested_deeper_than_the_limit_is_refused_at_save(
    tmp_path: Path, depth: int
) -> None:
    mgr = CheckpointManager(tmp_path / "run")
    with pytest.raises(ConfigError, match=f"metadata nests deeper than {MAX_DEPTH}"):
        mgr.save(1, {"w": torch.ones(1)}, metadata={"m": nested(depth - 1, 0)})
    assert mgr.checkpoints() == []
    mgr.close()


@pytest.mark.parametrize("field", ["metadata", "metrics"])
def test_writing_a_checkpoint_with_json_nested_too_deeply_is_refused(
    tmp_path: Path, field: str
) -> None:
    info: dict[str, Any] = {"metrics": {}, "metadata": {}}
    info[field] = {"m": nested(900, 0)}
    with pytest.raises(ConfigError, match=f"{field} nests deeper than {MAX_DEPTH}"):
        write_checkpoint(
            LocalStorage(tmp_path / "run"), "step-00000001", flatten({"w": torch.ones(1)}),
            step=1, created=0.0, **info,
        )  # fmt: skip
    assert not (tmp_path / "run" / "step-00000001").exists()


@pytest.mark.parametrize("depth", [200, 900, 100_000])
def test_a_deeply_nested_index_is_rebuilt_and_the_run_opens(
    tmp_path: Path, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run"
    saved_run(path)
    (path / INDEX).write_bytes(b"[" * depth + b"]" * depth)
    for read_only in (True, False):
        with caplog.at_level(logging.WARNING, logger="highmark"):
            mgr = CheckpointManager(path, monitor="loss", read_only=read_only)
        assert [c.step for c in mgr.checkpoints()] == [1, 2, 3]
        assert mgr.best is not None
        assert mgr.best.step == 2
        mgr.close()
        assert "rebuilt" in caplog.text
    assert json.loads((path / INDEX).read_bytes())["ranking"]["best_step"] == 2


def test_an_index_with_deeply_nested_metadata_and_a_valid_checksum_is_rebuilt(
    tmp_path: Path,
) -> None:
    """A crafted index (valid checksum) nesting metadata 500 deep: refused, rebuilt, and the
    index written back (re-encoding it would have hit the recursion limit)."""
    from highmark.store.index import seal

    path = tmp_path / "run"
    saved_run(path)
    index = json.loads((path / INDEX).read_bytes())
    index["checkpoints"][0]["metadata"] = {"deep": nested(500, 0)}
    (path / INDEX).write_bytes(seal(json.dumps(index, indent=1).encode()))
    with CheckpointManager(path, monitor="loss") as mgr:
        assert mgr.info(1).metadata == {}
        assert [c.step for c in mgr.checkpoints()] == [1, 2, 3]


@pytest.mark.parametrize(
    ("field", "depth"),
    [("metadata", MAX_DEPTH + 1), ("metadata", 500), ("metrics", 500), ("extra", 500)],
)
def test_a_manifest_nesting_a_field_too_deeply_is_refused(
    tmp_path: Path, field: str, depth: int
) -> None:
    path = tmp_path / "run"
    saved_run(path)
    value = {"x": nested(depth, 0, pad="p" * 100)}
    reseal(path / "step-00000002" / MANIFEST, lambda m: m.update({field: value}))
    storage = LocalStorage(path)
    with pytest.raises(CorruptCheckpointError, match="nests") as info:
        read_manifest(storage, "step-00000002")
    assert info.value.path == f"step-00000002/{MANIFEST}"
    assert [rel for rel, _ in verify_checkpoint(storage, "step-00000002")] == [info.value.path]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200])
def test_a_manifest_skeleton_nested_too_deeply_is_refused(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "run"
    saved_run(path)

    def deepen(m: dict[str, Any]) -> None:
        node: Any = {"tensor": "torch"}
        for _ in range(depth - 1):
            node = {"dict": [["a", node]]}
        m["skeleton"] = {"dict": [["w", node]]}
        m["files"][0]["tensors"][0]["name"] = "w" + ".a" * (depth - 1)

    reseal(path / "step-00000002" / MANIFEST, deepen)
    with pytest.raises(CorruptCheckpointError, match=f"deeper than {MAX_DEPTH}"):
        read_manifest(LocalStorage(path), "step-00000002")


def test_a_run_with_a_hostile_manifest_opens_from_its_other_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run"
    saved_run(path)
    (path / "step-00000002" / MANIFEST).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    (path / INDEX).unlink()  # the manifests must be read: the index is rebuilt
    for read_only in (True, False):
        with caplog.at_level(logging.WARNING, logger="highmark"):
            mgr = CheckpointManager(path, monitor="loss", read_only=read_only)
        assert [c.step for c in mgr.checkpoints()] == [1, 3]
        assert mgr.best is not None
        assert mgr.best.step == 1
        assert float(mgr.restore("best")["w"][0]) == 1.0
        mgr.close()
    assert "not indexing step-00000002" in caplog.text
