"""Tests of highmark.store.format: round trips, layout, partial and in-place restore, verify."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from highmark.errors import ConfigError, CorruptCheckpointError, IncompatibleFormatError
from highmark.state.dtypes import DTYPES
from highmark.state.torch import TORCH_CODEC
from highmark.state.tree import flatten
from highmark.store import format as fmt
from highmark.store import local as local_backend
from highmark.store.checks import canonical, hex64
from highmark.store.format import (
    FORMAT_VERSION,
    MANIFEST,
    estimate_size,
    read_manifest,
    verify_checkpoint,
    write_checkpoint,
)
from highmark.store.layout import SMALL_TENSOR
from highmark.store.local import LocalStorage
from highmark.store.objectstore import MemoryStorage
from highmark.store.restore import read_checkpoint
from highmark.store.storage import Storage
from highmark.store.streaming import StreamingFile

CKPT = "step-00000001"
DATA = Path(__file__).parent / "data"
NUMPY_DTYPES = [
    *("float64", "float32", "float16", "int64", "int32", "int16", "int8"),
    *("uint64", "uint32", "uint16", "uint8", "bool", "complex64", "complex128"),
]


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of trees: same types, dtypes, shapes and bytes; NaN == NaN."""
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, float):
        same_nan = math.isnan(a) and math.isnan(b)
        assert same_nan or (a == b and math.copysign(1, a) == math.copysign(1, b)), path
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype, path
        assert a.shape == b.shape, path
        assert tensor_bytes(a) == tensor_bytes(b), path
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype, path
        assert a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    else:
        assert a == b, path


def tensor_bytes(t: torch.Tensor) -> bytes:
    return b"".join(bytes(c) for c in TORCH_CODEC.chunks(t, 1 << 24))


def patterned(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of any dtype whose bytes are 1, 2, 3, ... (no arithmetic on exotic dtypes)."""
    t = TORCH_CODEC.empty(name, shape)
    view = TORCH_CODEC.writable_bytes(t)
    assert view is not None
    view[:] = bytes((i * 7 + 1) % 256 for i in range(len(view)))
    return t


def save(storage: Storage, state: Any, ckpt: str = CKPT, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"step": 1, "metrics": {"loss": 0.5}, "metadata": {}, "created": 1.0}
    args.update(kw)
    return write_checkpoint(storage, ckpt, flatten(state), **args)


def load(storage: Storage, ckpt: str = CKPT, **kw: Any) -> Any:
    return read_checkpoint(storage, ckpt, read_manifest(storage, ckpt), **kw)


def small_training_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(16, 4)).pow(2).mean().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "run")


def test_training_state_round_trips_exactly(storage: Storage) -> None:
    state = small_training_state()
    save(storage, state)
    assert_same(load(storage), state)


@pytest.mark.parametrize("name", list(DTYPES))
def test_every_torch_dtype_round_trips(name: str) -> None:
    storage = MemoryStorage()
    state = {
        "t": {
            "x": patterned(name, (3, 5)),
            "empty": patterned(name, (0, 4)),
            "s": patterned(name, ()),
        }
    }
    save(storage, state)
    assert_same(load(storage), state)


@pytest.mark.parametrize(
    "dtype",
    NUMPY_DTYPES,
)
def test_every_numpy_dtype_round_trips(dtype: str) -> None:
    storage = MemoryStorage()
    arr = np.frombuffer(bytes(range(1, 1 + 6 * np.dtype(dtype).itemsize)), dtype=dtype)
    state = {"a": arr.reshape(2, 3).copy(), "s": arr[0], "z": np.zeros((0,), dtype=dtype)}
    save(storage, state)
    assert_same(load(storage), state)


def test_big_endian_numpy_array_comes_back_with_equal_values() -> None:
    storage = MemoryStorage()
    save(storage, {"a": np.arange(4, dtype=">i4")})
    back = load(storage)["a"]
    assert back.tolist() == [0, 1, 2, 3]


def test_nested_containers_and_int_keys_round_trip(storage: Storage) -> None:
    state = {
        "opt": {
            "state": {0: {"step": torch.tensor(3.0)}, 7: {}},
            "groups": [{"betas": (0.9, 0.99)}],
        },
        "od": OrderedDict([("z", np.ones(2)), ("a", [1, (2, None), "x"])]),
        "json": [math.nan, math.inf, -math.inf, -0.0, 2**70, True, None, "é"],
    }
    save(storage, state)
    assert_same(load(storage), state)


def test_empty_string_keys_round_trip(storage: Storage) -> None:
    state = {"": torch.ones(1), "l": [{"": np.zeros(2)}], "m": {"": {"x": torch.ones(2)}}}
    save(storage, state)
    assert_same(load(storage), state)


def test_zero_dim_and_empty_tensors_round_trip(storage: Storage) -> None:
    state = {"m": {"s": torch.tensor(2.5), "e": torch.empty(0, 3), "n": np.float64(1.25)}}
    save(storage, state)
    assert_same(load(storage), state)


def test_non_contiguous_tensors_round_trip(storage: Storage) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    state = {"m": {"t": base.T, "s": base[:, ::2], "n": np.arange(12).reshape(3, 4).T}}
    save(storage, state)
    assert_same(load(storage), state)


def test_shared_and_tied_tensors_are_each_saved(storage: Storage) -> None:
    w = torch.randn(4, 4)
    state = {"m": {"a": w, "b": w, "row": w[1], "flat": w.view(-1)}}
    save(storage, state)
    back = load(storage)
    assert_same(back, state)


def test_root_level_tensors_go_to_state_file(local: LocalStorage) -> None:
    manifest = save(local, {"w": torch.ones(2), "model": {"b": torch.zeros(1)}, "x": np.ones(1)})
    files = {f["name"]: {t["name"] for t in f["tensors"]} for f in manifest["files"]}
    assert files == {"state.safetensors": {"w", "x"}, "model.safetensors": {"model.b"}}


def test_a_tensor_at_the_root_round_trips(storage: Storage) -> None:
    save(storage, torch.arange(3))
    assert_same(load(storage), torch.arange(3))


def test_file_names_are_derived_safely_from_keys(local: LocalStorage) -> None:
    state = {
        "../evil": {"w": torch.ones(1)},
        "Model": {"w": torch.ones(1)},
        "model": {"w": torch.ones(1)},
    }
    manifest = save(local, state)
    names = [f["name"] for f in manifest["files"]]
    assert names == ["_evil.safetensors", "Model.safetensors", "model-2.safetensors"]
    assert_same(load(local), state)


def test_safetensors_load_file_reads_our_files(local: LocalStorage) -> None:
    state = small_training_state()
    state["extra"] = {"bf": patterned("bfloat16", (3,)), "f8": patterned("float8_e4m3fn", (2, 2))}
    state["extra"]["f4"] = patterned("float4_e2m1fn_x2", (2, 3))
    manifest = save(local, state)
    flat = flatten(state).tensors
    for f in manifest["files"]:
        loaded = load_file(str(local.root) + f"/{CKPT}/{f['name']}")
        assert list(loaded) == [t["name"] for t in f["tensors"]]
        for name, tensor in loaded.items():
            assert_same(tensor, flat[name])


def test_exotic_dtypes_are_stored_bytewise_for_load_file(local: LocalStorage) -> None:
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128)
    save(local, {"z": {"c": z}})
    loaded = load_file(str(local.root) + f"/{CKPT}/z.safetensors")["z.c"]
    assert loaded.dtype == torch.uint8
    assert loaded.numpy().tobytes() == z.numpy().tobytes()


def test_headers_are_padded_and_tensors_aligned(local: LocalStorage) -> None:
    state = {
        "m": {
            "a": torch.ones(3, dtype=torch.int8),
            "b": torch.ones(3),
            "c": torch.ones(1, dtype=torch.float64),
        }
    }
    save(local, state)
    data = (Path(local.root) / CKPT / "m.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(data[8 : 8 + n])
    for name, itemsize in [("m.a", 1), ("m.b", 4), ("m.c", 8)]:
        assert header[name]["data_offsets"][0] % itemsize == 0


def test_small_tensors_come_first_within_their_item_size(local: LocalStorage) -> None:
    big = torch.arange(SMALL_TENSOR // 4 + 1, dtype=torch.float32)  # one float over "small"
    state = {
        "m": {
            "big1": big,
            "s1": torch.ones(3),
            "i8": torch.ones(5, dtype=torch.int8),
            "big2": big * 2,
            "s2": torch.full((1,), 7.0),
            "d": torch.ones(2, dtype=torch.float64),
        }
    }
    save(local, state)
    data = (Path(local.root) / CKPT / "m.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    del header["__metadata__"]
    order = sorted(header, key=lambda name: header[name]["data_offsets"][0])
    assert order == ["m.d", "m.s1", "m.s2", "m.big1", "m.big2", "m.i8"]
    for name, itemsize in [("m.d", 8), ("m.s1", 4), ("m.big1", 4), ("m.i8", 1)]:
        assert header[name]["data_offsets"][0] % itemsize == 0
    back = read_checkpoint(local, CKPT, read_manifest(local, CKPT))["m"]
    assert all(torch.equal(back[k], v) for k, v in state["m"].items())
    assert load_file(str(local.root) + f"/{CKPT}/m.safetensors")["m.s2"].tolist() == [7.0]


def test_manifest_is_written_last() -> None:
    storage = MemoryStorage()  # its dict keeps the order files were written in
    save(storage, small_training_state())
    assert list(storage.files)[-1] == f"{CKPT}/{MANIFEST}"


def test_manifest_records_files_tensors_and_run_data(storage: Storage) -> None:
    save(
        storage, {"m": {"w": torch.ones(2)}}, step=7, metrics={"loss": math.nan}, metadata={"a": 1}
    )
    manifest = read_manifest(storage, CKPT)
    assert manifest["format"] == FORMAT_VERSION
    assert manifest["step"] == 7
    assert math.isnan(manifest["metrics"]["loss"])
    assert manifest["metadata"] == {"a": 1}
    (file,) = manifest["files"]
    assert file["size"] == storage.size(f"{CKPT}/m.safetensors")
    (tensor,) = file["tensors"]
    assert (tensor["name"], tensor["dtype"], tensor["shape"], tensor["kind"]) == (
        "m.w",
        "float32",
        [2],
        "torch",
    )


def test_metadata_that_is_not_json_is_refused_before_writing() -> None:
    storage = MemoryStorage()
    with pytest.raises(ConfigError, match="metadata"):
        save(storage, {"m": {"w": torch.ones(1)}}, metadata={"f": object()})
    assert storage.files == {}


def test_numpy_int_step_is_recorded_as_an_int() -> None:
    storage = MemoryStorage()
    save(storage, {"m": {"w": torch.ones(1)}}, step=np.int64(5))
    assert read_manifest(storage, CKPT)["step"] == 5


def test_negative_step_is_refused_before_writing() -> None:
    storage = MemoryStorage()
    with pytest.raises(ConfigError, match="step"):
        save(storage, {"m": {"w": torch.ones(1)}}, step=-1)
    assert storage.files == {}


def test_estimate_size_is_a_close_upper_bound(storage: Storage) -> None:
    state = small_training_state()
    estimate = estimate_size(flatten(state))
    manifest = save(storage, state)
    written = sum(f["size"] for f in manifest["files"]) + storage.size(f"{CKPT}/{MANIFEST}")
    assert written <= estimate <= written + 16384


def test_partial_restore_returns_only_the_given_keys(storage: Storage) -> None:
    state = small_training_state()
    save(storage, state)
    assert_same(load(storage, keys=["model"]), {"model": state["model"]})


def test_partial_restore_does_not_read_other_files(local: LocalStorage) -> None:
    state = small_training_state()
    save(local, state)
    (Path(local.root) / CKPT / "optimizer.safetensors").write_bytes(b"garbage")
    assert_same(load(local, keys=["model", "epoch"]), {"model": state["model"], "epoch": 3})


def test_partial_restore_of_a_nested_key_path(storage: Storage) -> None:
    state = small_training_state()
    save(storage, state)
    back = load(storage, keys=["optimizer.state.0"])
    assert_same(back, {"optimizer": {"state": {0: state["optimizer"]["state"][0]}}})


class CountingStorage(MemoryStorage):
    """The in-memory storage, counting the bytes read through open_read."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    def open_read(self, rel: str) -> Any:
        outer = self

        class Counting(io.BytesIO):
            def read(self, n: int | None = -1) -> bytes:
                data = super().read(n)
                outer.bytes_read += len(data)
                return data

            def readinto(self, buffer: Any) -> int:
                n = super().readinto(buffer)
                outer.bytes_read += n
                return n

        return Counting(self.read_bytes(rel))


def test_restore_of_one_key_reads_only_its_bytes() -> None:
    storage = CountingStorage()
    state = {"model": {f"layer{i}": torch.randn(256, 256) for i in range(8)}}  # 8 x 256 KiB
    save(storage, state)
    load(storage, keys=["model.layer3"])
    assert 256 * 256 * 4 <= storage.bytes_read < 256 * 256 * 4 + 4096


def test_restore_of_an_unknown_key_is_refused(storage: Storage) -> None:
    save(storage, small_training_state())
    with pytest.raises(ConfigError, match="nope"):
        load(storage, keys=["nope"])


def test_restored_tensors_are_writable_and_writes_never_reach_the_file(local: LocalStorage) -> None:
    state = {"m": {"w": torch.ones(4), "n": np.ones(4)}}
    save(local, state)
    before = (Path(local.root) / CKPT / "m.safetensors").read_bytes()
    back = load(local)
    back["m"]["w"].add_(1)
    back["m"]["n"] += 1
    assert (Path(local.root) / CKPT / "m.safetensors").read_bytes() == before
    assert_same(load(local), state)


def test_restored_tensors_outlive_their_deleted_checkpoint(local: LocalStorage) -> None:
    state = {"m": {"w": torch.arange(1000.0)}}
    save(local, state)
    back = load(local)
    local.remove_tree(CKPT)
    assert_same(back, state)


def test_into_fills_existing_tensors_in_place(storage: Storage) -> None:
    state = small_training_state()
    save(storage, state)
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    sd = target.state_dict()
    ptrs = {k: v.data_ptr() for k, v in sd.items()}
    back = load(storage, keys=["model"], into=sd)
    for k, v in target.state_dict().items():
        assert v.data_ptr() == ptrs[k]
        assert torch.equal(v, state["model"][k])
        assert back["model"][k] is sd[k]


def test_into_fills_parameters_that_require_grad(storage: Storage) -> None:
    state = small_training_state()
    save(storage, state)
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    load(storage, keys=["model"], into=target.state_dict(keep_vars=True))
    assert target[0].weight.requires_grad
    assert torch.equal(target[0].weight, state["model"]["0.weight"])


def test_into_a_bare_state_dict_without_keys_says_how_to_fill_a_subtree(storage: Storage) -> None:
    save(storage, small_training_state())
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"keys=\["):
        load(storage, into=target.state_dict())


def test_into_accepts_the_whole_restored_tree(storage: Storage) -> None:
    state = {"m": {"w": torch.randn(3)}, "n": np.arange(3.0)}
    save(storage, state)
    into = {"m": {"w": torch.zeros(3)}, "n": np.zeros(3)}
    ptr = into["m"]["w"].data_ptr()
    load(storage, into=into)
    assert into["m"]["w"].data_ptr() == ptr
    assert torch.equal(into["m"]["w"], state["m"]["w"])
    assert np.array_equal(into["n"], state["n"])


def test_into_fills_a_non_contiguous_tensor(storage: Storage) -> None:
    state = {"m": {"w": torch.randn(3, 4)}}
    save(storage, state)
    dest = torch.zeros(4, 3).T
    load(storage, into={"m": {"w": dest}})
    assert torch.equal(dest, state["m"]["w"])


def test_into_with_a_different_shape_names_the_key(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(3)}})
    with pytest.raises(ConfigError, match=r"m\.w.*float32\[3\].*float32\[4\]"):
        load(storage, into={"m": {"w": torch.zeros(4)}})


def test_into_with_a_mismatch_leaves_every_into_tensor_untouched(storage: Storage) -> None:
    # "a" precedes "b" in the file; "a" is non-contiguous, so it is read into a host tensor
    # and assigned: that must wait until "b" has been checked too.
    save(storage, {"m": {"a": torch.randn(3, 4), "b": torch.ones(3)}})
    a, b = torch.zeros(4, 3).T, torch.zeros(4)
    with pytest.raises(ConfigError, match=r"m\.b"):
        load(storage, into={"m": {"a": a, "b": b}})
    assert not a.any()
    assert not b.any()


def test_a_damaged_tensor_never_reaches_a_non_contiguous_into_tensor(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(100, 2)}})
    flip_byte(storage, f"{CKPT}/m.safetensors", 10)
    dest = torch.zeros(2, 100).T
    with pytest.raises(CorruptCheckpointError, match=r"m\.w"):
        load(storage, into={"m": {"w": dest}})
    assert not dest.any()


def test_into_with_a_different_dtype_names_the_key(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(3)}})
    with pytest.raises(ConfigError, match=r"m\.w.*float64"):
        load(storage, into={"m": {"w": torch.zeros(3, dtype=torch.float64)}})


def test_into_with_a_tensor_the_checkpoint_lacks_is_refused(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(3)}})
    with pytest.raises(ConfigError, match=r"m\.extra"):
        load(storage, into={"m": {"w": torch.zeros(3), "extra": torch.zeros(1)}})


def flip_byte(storage: Storage, rel: str, offset_from_end: int) -> None:
    data = bytearray(storage.read_bytes(rel))
    data[len(data) - offset_from_end] ^= 0xFF
    storage.remove(rel)
    storage.write_bytes(rel, bytes(data))


def test_damaged_tensor_bytes_are_detected_on_restore(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(100)}})
    flip_byte(storage, f"{CKPT}/m.safetensors", 10)
    with pytest.raises(CorruptCheckpointError, match=r"m\.safetensors.*m\.w") as info:
        load(storage)
    assert info.value.path == f"{CKPT}/m.safetensors"


def test_restore_without_verify_skips_checksums() -> None:
    storage = MemoryStorage()
    save(storage, {"m": {"w": torch.ones(100)}})
    flip_byte(storage, f"{CKPT}/m.safetensors", 10)
    assert load(storage, verify=False)["m"]["w"].shape == (100,)


def test_missing_tensor_file_is_reported_on_restore(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(2)}})
    storage.remove(f"{CKPT}/m.safetensors")
    with pytest.raises(CorruptCheckpointError, match="missing"):
        load(storage)


def test_verify_passes_an_intact_checkpoint(storage: Storage) -> None:
    save(storage, small_training_state())
    assert verify_checkpoint(storage, CKPT) == []


def test_verify_reports_a_missing_file(storage: Storage) -> None:
    save(storage, small_training_state())
    storage.remove(f"{CKPT}/optimizer.safetensors")
    assert verify_checkpoint(storage, CKPT) == [
        (f"{CKPT}/optimizer.safetensors", "file is missing")
    ]


def test_verify_reports_a_size_mismatch(storage: Storage) -> None:
    save(storage, small_training_state())
    rel = f"{CKPT}/model.safetensors"
    data = storage.read_bytes(rel)
    storage.remove(rel)
    storage.write_bytes(rel, data[:-3])
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == rel
    assert "size" in problem


def test_verify_reports_a_checksum_mismatch(storage: Storage) -> None:
    save(storage, small_training_state())
    flip_byte(storage, f"{CKPT}/model.safetensors", 1)
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == f"{CKPT}/model.safetensors"
    assert "checksum" in problem


def test_verify_reports_a_bad_header(storage: Storage) -> None:
    save(storage, small_training_state())
    rel = f"{CKPT}/model.safetensors"
    data = bytearray(storage.read_bytes(rel))
    data[8] = ord("[")
    storage.remove(rel)
    storage.write_bytes(rel, bytes(data))
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == rel
    assert "safetensors" in problem


def test_verify_reports_every_damaged_file(storage: Storage) -> None:
    save(storage, small_training_state())
    storage.remove(f"{CKPT}/model.safetensors")
    flip_byte(storage, f"{CKPT}/optimizer.safetensors", 1)
    assert [p for p, _ in verify_checkpoint(storage, CKPT)] == [
        f"{CKPT}/model.safetensors",
        f"{CKPT}/optimizer.safetensors",
    ]


def test_verify_reports_a_missing_manifest(storage: Storage) -> None:
    save(storage, small_training_state())
    storage.remove(f"{CKPT}/{MANIFEST}")
    assert verify_checkpoint(storage, CKPT) == [(f"{CKPT}/{MANIFEST}", "manifest.json is missing")]


def test_verify_reports_a_damaged_manifest(storage: Storage) -> None:
    save(storage, small_training_state())
    rel = f"{CKPT}/{MANIFEST}"
    text = storage.read_bytes(rel).replace(b'"step": 1', b'"step": 2')
    storage.remove(rel)
    storage.write_bytes(rel, text)
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == rel
    assert "checksum" in problem


def rewrite_manifest(storage: Storage, ckpt: str, change: Any) -> None:
    """Edit a manifest and give it a valid checksum again (what a careful attacker would do)."""
    rel = f"{ckpt}/{MANIFEST}"
    manifest = json.loads(storage.read_bytes(rel))
    change(manifest)
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    storage.remove(rel)
    storage.write_bytes(rel, json.dumps(manifest).encode())


def test_newer_format_is_refused_naming_both_versions() -> None:
    assert FORMAT_VERSION == 2
    storage = MemoryStorage()
    save(storage, {"m": {"w": torch.ones(1)}})
    rewrite_manifest(storage, CKPT, lambda m: m.update(format=3))
    with pytest.raises(IncompatibleFormatError, match=r"format 3.*format 2"):
        read_manifest(storage, CKPT)


def test_file_checksum_covers_the_header_and_the_tensor_checksums(local: LocalStorage) -> None:
    """Format 2: xxh3 of (header bytes + each tensor's xxh3 as 8 big-endian bytes, in order)."""
    manifest = save(local, {"m": {"a": torch.arange(5.0), "b": torch.zeros(0), "c": torch.ones(3)}})
    (file,) = manifest["files"]
    data = local.read_bytes(f"{CKPT}/m.safetensors")
    expected = xxhash.xxh3_64(data[: file["data_start"]])
    for t in sorted(file["tensors"], key=lambda t: t["data_offsets"][0]):
        begin, end = (file["data_start"] + o for o in t["data_offsets"])
        assert t["xxh3"] == xxhash.xxh3_64_hexdigest(data[begin:end])
        expected.update(xxhash.xxh3_64_intdigest(data[begin:end]).to_bytes(8, "big"))
    assert file["xxh3"] == expected.hexdigest()


def test_verify_names_the_damaged_tensor(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(100), "v": torch.zeros(3)}})
    flip_byte(storage, f"{CKPT}/m.safetensors", 1)
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == f"{CKPT}/m.safetensors"
    assert problem == "checksum mismatch in tensor 'm.v'"


def test_verify_detects_header_damage_that_still_parses(storage: Storage) -> None:
    save(storage, {"m": {"w": torch.ones(4)}})
    rel = f"{CKPT}/m.safetensors"
    data = storage.read_bytes(rel)
    assert data.count(b'"pt"') == 1
    storage.remove(rel)
    storage.write_bytes(rel, data.replace(b'"pt"', b'"pu"'))  # valid header, other metadata
    with pytest.raises(CorruptCheckpointError, match="header does not match the manifest"):
        load(storage)  # a verified restore checks the header's bytes
    assert load(storage, verify=False)["m"]["w"].tolist() == [1.0] * 4  # only its meaning
    ((path, problem),) = verify_checkpoint(storage, CKPT)
    assert path == rel
    assert problem.startswith("checksum mismatch (xxh3")


def assert_fixture_state(state: Any) -> None:
    """The state every format fixture holds (written from the same tree)."""
    assert state["model"]["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert state["model"]["bf"].dtype == torch.bfloat16
    assert state["optimizer"]["state"][0]["step"].item() == 3.0
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert state["rng"].dtype == np.uint32
    assert math.isnan(state["best"])


def test_format_1_fixture_still_reads() -> None:
    """A tiny checkpoint written by format 1 (tests/store/data/format1) must always read back."""
    storage = LocalStorage(DATA / "format1")
    assert verify_checkpoint(storage, "step-00000003") == []
    assert_fixture_state(load(storage, "step-00000003"))


def test_format_1_fixture_damage_is_still_detected(tmp_path: Path) -> None:
    """Format 1 files are verified by their whole-file hash, as when they were written."""
    shutil.copytree(DATA / "format1", tmp_path / "run")
    storage = LocalStorage(tmp_path / "run")
    rel = "step-00000003/model.safetensors"
    data = bytearray(storage.read_bytes(rel))
    data[-1] ^= 0xFF
    (tmp_path / "run" / rel).write_bytes(bytes(data))
    ((path, problem),) = verify_checkpoint(storage, "step-00000003")
    assert path == rel
    assert problem.startswith("checksum mismatch (xxh3")


def test_format_2_fixture_still_reads() -> None:
    """A tiny checkpoint written by format 2 (tests/store/data/format2) must always read back."""
    storage = LocalStorage(DATA / "format2")
    assert read_manifest(storage, "step-00000003")["format"] == 2
    assert verify_checkpoint(storage, "step-00000003") == []
    assert_fixture_state(load(storage, "step-00000003"))


small_arrays = st.builds(
    lambda dt, n, torchy, seed: _array(dt, n, torchy, seed),
    st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "float16", "bfloat16"]),
    st.integers(0, 5),
    st.booleans(),
    st.integers(0, 2**31),
)


def _array(dtype: str, n: int, torchy: bool, seed: int) -> Any:
    raw = np.random.default_rng(seed).integers(0, 256, n * DTYPES[dtype].itemsize, dtype=np.uint8)
    if torchy or dtype == "bfloat16":
        return TORCH_CODEC.from_buffer(memoryview(bytearray(raw.tobytes())), dtype, (n,))
    return np.frombuffer(raw.tobytes(), dtype=dtype).copy()


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)
)
trees = st.recursive(
    st.one_of(json_scalars, small_arrays),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.lists(kids, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)), kids, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_arbitrary_trees_round_trip_through_the_format(tree: Any) -> None:
    try:
        flat = flatten(tree)
    except Exception as exc:  # key-path collisions ({1: .., "1": ..}) are refused
        if "key path" not in str(exc):
            raise
        return
    storage = MemoryStorage()
    write_checkpoint(storage, CKPT, flat, step=0, metrics={}, metadata={}, created=0.0)
    assert_same(load(storage), tree)


def test_numpy_only_checkpoint_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from highmark.store.objectstore import MemoryStorage\n"
        "from highmark.store.format import write_checkpoint, read_manifest\n"
        "from highmark.store.restore import read_checkpoint\n"
        "from highmark.state.tree import flatten\n"
        "s = MemoryStorage()\n"
        "write_checkpoint(s, 'c', flatten({'a': {'x': np.ones(3)}}), step=0, metrics={},\n"
        "                 metadata={}, created=0.0)\n"
        "back = read_checkpoint(s, 'c', read_manifest(s, 'c'))\n"
        "assert back['a']['x'].tolist() == [1.0, 1.0, 1.0]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_saved_tensor_that_requires_grad_is_written_whole(tmp_path: Path) -> None:
    weight = torch.nn.Parameter(torch.randn(300, 70))  # chunks() must not need detach() here
    storage = LocalStorage(tmp_path / "run")
    flat = flatten({"w": weight, "b": torch.arange(5.0, requires_grad=True)})
    manifest = write_checkpoint(storage, "ck", flat, step=1, metrics={}, metadata={}, created=0.0)
    back = read_checkpoint(storage, "ck", manifest)
    assert torch.equal(back["w"], weight.detach())
    assert torch.equal(back["b"], torch.arange(5.0))


def test_small_tensors_are_written_in_bounded_batches(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records the size of every write (the bytes written are the real ones): joining the small
    # tensors must never copy more than a batch at a time, however many there are.
    sizes: list[int] = []

    class Recording(StreamingFile):
        def write(self, data: Any, /) -> int:
            sizes.append(memoryview(data).nbytes)
            return super().write(data)

    monkeypatch.setattr(local_backend, "StreamingFile", Recording)
    n = SMALL_TENSOR // 4  # float32 elements of one small tensor
    state = {"m": {f"s{i}": torch.full((n,), float(i)) for i in range(40)}}  # 2.5 MiB
    state["m"]["big"] = torch.arange(n + 1, dtype=torch.float32)
    save(local, state)
    small_writes = [s for s in sizes if s > SMALL_TENSOR + 4]
    assert small_writes
    assert max(small_writes) <= fmt._SMALL_BATCH + SMALL_TENSOR
    assert len([s for s in sizes if s >= fmt._SMALL_BATCH]) >= 2  # 2.5 MiB: several batches
    back = read_checkpoint(local, CKPT, read_manifest(local, CKPT))["m"]
    assert all(torch.equal(back[k], v) for k, v in state["m"].items())
