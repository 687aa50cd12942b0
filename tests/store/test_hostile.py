"""Hostile input for the checkpoint format: each is refused with CorruptCheckpointError, without a
crash, a large allocation or running any code, and verify_checkpoint reports it without raising."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from highmark.errors import CorruptCheckpointError, IncompatibleFormatError
from highmark.state.tree import flatten
from highmark.store.checks import canonical, hex64
from highmark.store.format import MANIFEST, read_manifest, verify_checkpoint, write_checkpoint
from highmark.store.local import LocalStorage
from highmark.store.objectstore import MemoryStorage
from highmark.store.restore import read_checkpoint
from highmark.store.storage import Storage

CKPT = "step-00000001"
TARGET = f"{CKPT}/model.safetensors"


class Exploit:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    """A local run holding one intact checkpoint."""
    store = LocalStorage(tmp_path / "run")
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}, "epoch": 1}
    write_checkpoint(store, CKPT, flatten(state), step=1, metrics={}, metadata={}, created=0.0)
    return store


def rewrite_manifest(storage: Storage, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest and give it a valid checksum again (what a careful attacker would do)."""
    rel = f"{CKPT}/{MANIFEST}"
    manifest = json.loads(storage.read_bytes(rel))
    change(manifest)
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    storage.remove(rel)
    storage.write_bytes(rel, json.dumps(manifest).encode())


def plant(storage: Storage, data: bytes, *, fix_size: bool = True) -> dict[str, Any]:
    """Replace model.safetensors by ``data``; returns the (validated) manifest, in which, with
    ``fix_size``, the file's size is made to agree so the reader gets to parse the hostile bytes."""
    manifest = read_manifest(storage, CKPT)
    storage.remove(TARGET)
    storage.write_bytes(TARGET, data)
    if fix_size:
        manifest["files"][0]["size"] = len(data)
    return manifest


def assert_refused(storage: Storage, manifest: dict[str, Any], *, match: str | None = None) -> None:
    """Restore raises CorruptCheckpointError naming the file, with no large allocation, and
    verify reports the file without raising."""
    tracemalloc.start()
    try:
        with pytest.raises(CorruptCheckpointError, match=match) as info:
            read_checkpoint(storage, CKPT, manifest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.path == TARGET
    assert peak < 8 << 20, f"peak allocation {peak} bytes"
    problems = verify_checkpoint(storage, CKPT, manifest)
    assert [path for path, _ in problems] == [TARGET]


def safetensors_bytes(header: Any, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_pickle_renamed_to_safetensors_is_refused_without_running_code(
    storage: Storage, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    manifest = plant(storage, pickle.dumps({"w": Exploit(str(marker))}, protocol=2))
    assert_refused(storage, manifest, match="not a valid safetensors file")
    assert not marker.exists()


def test_torch_save_zip_renamed_to_safetensors_is_refused(storage: Storage) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    manifest = plant(storage, buffer.getvalue())
    assert_refused(storage, manifest, match="not a valid safetensors file")


@pytest.mark.parametrize("size", [0, 5, 8, 64, 4096])
def test_random_bytes_are_refused(storage: Storage, size: int) -> None:
    manifest = plant(storage, random.Random(size).randbytes(size))
    assert_refused(storage, manifest)


def test_header_claiming_gigabytes_is_refused_without_allocating(storage: Storage) -> None:
    manifest = plant(storage, struct.pack("<Q", 8 << 30) + b"{}" * 100)
    assert_refused(storage, manifest, match="header length 8589934592 is impossible")


def test_header_length_beyond_the_safetensors_limit_is_refused(tmp_path: Path) -> None:
    # A real 101 MiB file (sparse), whose header length is within the file but above the limit.
    storage = LocalStorage(tmp_path / "run")
    write_checkpoint(
        storage,
        CKPT,
        flatten({"model": {"w": torch.ones(1)}}),
        step=1,
        metrics={},
        metadata={},
        created=0.0,
    )
    path = Path(storage.root) / TARGET
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 101 << 20))
        f.truncate(8 + (101 << 20))
    manifest = read_manifest(storage, CKPT)
    manifest["files"][0]["size"] = os.path.getsize(path)
    assert_refused(storage, manifest, match="impossible")


def test_tensor_claiming_gigabytes_of_data_is_refused(storage: Storage) -> None:
    header = {"model.w": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}
    manifest = plant(storage, safetensors_bytes(header, b"\0" * 16))
    assert_refused(storage, manifest, match="does not fill the file")


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -4])
def test_truncated_file_is_refused(storage: Storage, cut: int) -> None:
    data = storage.read_bytes(TARGET)
    manifest = plant(storage, data[:cut], fix_size=False)
    assert_refused(storage, manifest, match="size is")


@pytest.mark.parametrize("cut", [3, 8, 20, -4])
def test_truncated_file_with_a_matching_manifest_size_is_refused(
    storage: Storage, cut: int
) -> None:
    manifest = plant(storage, storage.read_bytes(TARGET)[:cut])
    assert_refused(storage, manifest, match="not a valid safetensors file")


def test_deeply_nested_header_is_refused(storage: Storage) -> None:
    manifest = plant(storage, safetensors_bytes(None, raw=b"[" * 200_000 + b"]" * 200_000))
    assert_refused(storage, manifest, match="not JSON|not a JSON object")


def test_header_that_is_not_utf8_is_refused(storage: Storage) -> None:
    manifest = plant(storage, safetensors_bytes(None, raw=b'{"\xff\xfe": 1}'))
    assert_refused(storage, manifest, match="not JSON")


def test_header_that_is_a_list_is_refused(storage: Storage) -> None:
    manifest = plant(storage, safetensors_bytes([1, 2]))
    assert_refused(storage, manifest, match="not a JSON object")


HOSTILE_HEADERS = {
    "unknown dtype": ({"x": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 4]}}, 4),
    "shape/bytes mismatch": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4),
    "negative offset": ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}}, 1),
    "offsets reversed": ({"x": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, 4),
    "bool in shape": ({"x": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, 1),
    "float offsets": ({"x": {"dtype": "U8", "shape": [1], "data_offsets": [0.0, 1.0]}}, 1),
    "entry not an object": ({"x": 5}, 0),
    "metadata not strings": ({"__metadata__": {"a": 1}}, 0),
    "out of bounds": ({"x": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}, 4),
    "gap": (
        {
            "x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "y": {"dtype": "U8", "shape": [2], "data_offsets": [3, 5]},
        },
        5,
    ),
    "overlap": (
        {
            "x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "y": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]},
        },
        4,
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_malformed_header_is_refused(storage: Storage, case: str) -> None:
    header, nbytes = HOSTILE_HEADERS[case]
    manifest = plant(storage, safetensors_bytes(header, b"\1" * nbytes))
    assert_refused(storage, manifest, match="not a valid safetensors file")


def test_header_naming_other_tensors_than_the_manifest_is_refused(storage: Storage) -> None:
    data = storage.read_bytes(TARGET).replace(b'"model.w"', b'"model.x"')
    manifest = plant(storage, data)
    assert_refused(storage, manifest, match="does not match the manifest")


def test_header_with_another_shape_than_the_manifest_is_refused(storage: Storage) -> None:
    data = storage.read_bytes(TARGET).replace(b'"shape":[2,3]', b'"shape":[3,2]')
    manifest = plant(storage, data)
    assert_refused(storage, manifest, match="does not match the manifest")


# ----------------------------------------------------------------------------- hostile manifests


def assert_manifest_refused(storage: Storage, match: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=match) as info:
        read_manifest(storage, CKPT)
    assert info.value.path == f"{CKPT}/{MANIFEST}"
    ((path, _),) = verify_checkpoint(storage, CKPT)
    assert path == f"{CKPT}/{MANIFEST}"


@pytest.mark.parametrize(
    "name",
    [
        "../evil.safetensors",
        "../../etc/passwd",
        "/etc/passwd.safetensors",
        "sub/model.safetensors",
        "sub\\model.safetensors",
        "..",
        "",
        "C:model.safetensors",
        ".hidden.safetensors",
        "manifest.json",
        "nul\x00.safetensors",
        5,
    ],
)
def test_manifest_naming_a_file_outside_the_checkpoint_is_refused(
    storage: Storage, name: Any
) -> None:
    rewrite_manifest(storage, lambda m: m["files"][0].update(name=name))
    assert_manifest_refused(storage, "unsafe or invalid name")


def test_edited_manifest_fails_its_checksum(storage: Storage) -> None:
    rel = f"{CKPT}/{MANIFEST}"
    text = storage.read_bytes(rel).replace(b'"model.safetensors"', b'"../evil.safetensors"')
    storage.remove(rel)
    storage.write_bytes(rel, text)
    assert_manifest_refused(storage, "checksum")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\x04\x95", b"not json", b"[1, 2]", b"\xff" * 64, b"[" * 100_000 + b"]" * 100_000],
)
def test_manifest_that_is_not_a_json_object_is_refused(storage: Storage, data: bytes) -> None:
    storage.remove(f"{CKPT}/{MANIFEST}")
    storage.write_bytes(f"{CKPT}/{MANIFEST}", data)
    assert_manifest_refused(storage, "JSON")


def test_oversized_manifest_is_refused_without_reading_it(storage: Storage) -> None:
    assert isinstance(storage, LocalStorage)
    with open(Path(storage.root) / CKPT / MANIFEST, "r+b") as f:
        f.truncate(300 << 20)  # sparse: costs no disk
    assert_manifest_refused(storage, "implausibly large")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(format=0), "format version"),
        (lambda m: m.update(format="1"), "format version"),
        (lambda m: m.pop("format"), "format version"),
        (lambda m: m.update(step=-1), "step"),
        (lambda m: m.update(metrics=[]), "metrics"),
        (lambda m: m.pop("files"), "file list"),
        (lambda m: m.update(skeleton={"dict": [["a", {"tensor": "pickle"}]]}), "skeleton"),
        (lambda m: m["files"][0].update(size=-1), "size"),
        (lambda m: m["files"][0].update(xxh3="x" * 16), "xxh3"),
        (lambda m: m["files"][0].pop("xxh3"), "xxh3"),
        (lambda m: m["files"][0]["tensors"][0].update(dtype="object"), "dtype"),
        (lambda m: m["files"][0]["tensors"][0].update(kind="numpy"), "kind"),
        (lambda m: m["files"][0]["tensors"][0].update(shape=[1 << 40]), "byte length"),
        (lambda m: m["files"][0]["tensors"][0].update(name="not.in.tree"), "not in the skeleton"),
        (lambda m: m["files"].append(dict(m["files"][0])), "listed twice"),
        (lambda m: m["files"][0]["tensors"].pop(), "in no file|does not match"),
    ],
)
def test_malformed_manifest_is_refused(
    storage: Storage, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    rewrite_manifest(storage, change)
    assert_manifest_refused(storage, match)


def test_numpy_kind_with_a_torch_only_dtype_is_refused() -> None:
    storage = MemoryStorage()
    state = {"a": {"x": torch.ones(2, dtype=torch.bfloat16)}}
    write_checkpoint(storage, CKPT, flatten(state), step=1, metrics={}, metadata={}, created=0.0)

    def to_numpy(m: dict[str, Any]) -> None:
        m["files"][0]["tensors"][0]["kind"] = "numpy"
        m["skeleton"] = {"dict": [["a", {"dict": [["x", {"tensor": "numpy"}]]}]]}

    rewrite_manifest(storage, to_numpy)
    assert_manifest_refused(storage, "cannot be a numpy array")


def test_newer_format_is_an_incompatible_format_error(storage: Storage) -> None:
    rewrite_manifest(storage, lambda m: m.update(format=99))
    with pytest.raises(IncompatibleFormatError, match=r"format 99.*format 2"):
        read_manifest(storage, CKPT)
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == f"{CKPT}/{MANIFEST}"
    assert "99" in problem


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_mutated_files_fail_only_with_corrupt_checkpoint_error(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    """Random byte edits and cuts anywhere in a tensor file: the reader and verify either accept
    the file (an edit that changes nothing the checks see) or refuse it with
    CorruptCheckpointError; any other exception would be a crash on hostile input."""
    store = MemoryStorage()
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}}
    write_checkpoint(store, CKPT, flatten(state), step=1, metrics={}, metadata={}, created=0.0)
    manifest = read_manifest(store, CKPT)
    data = bytearray(store.read_bytes(TARGET))
    for position, value in edits:
        data[position % len(data)] = value
    data = data[:cut] if cut is not None else data
    store.write_bytes(TARGET, bytes(data))
    manifest["files"][0]["size"] = len(data)
    refused = None
    try:
        read_checkpoint(store, CKPT, manifest)
    except CorruptCheckpointError as exc:
        refused = exc.path
    assert refused in (None, TARGET)
    problems = verify_checkpoint(store, CKPT, manifest)
    assert all(path == TARGET for path, _ in problems)


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_mutated_manifests_fail_only_with_checkpoint_errors(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    store = MemoryStorage()
    state = {"model": {"w": torch.ones(2)}, "epoch": 1, "groups": [{"lr": 0.1}]}
    write_checkpoint(store, CKPT, flatten(state), step=1, metrics={}, metadata={}, created=0.0)
    rel = f"{CKPT}/{MANIFEST}"
    data = bytearray(store.read_bytes(rel))
    for position, value in edits:
        data[position % len(data)] = value
    store.write_bytes(rel, bytes(data[:cut] if cut is not None else data))
    refused = None
    try:
        read_manifest(store, CKPT)
    except (CorruptCheckpointError, IncompatibleFormatError) as exc:
        refused = exc
    problems = verify_checkpoint(store, CKPT)
    assert (refused is None) == (problems == [])
