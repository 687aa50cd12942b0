"""Tests of highmark.state.torch: dtype names, byte views, the torch codec, RNG, objects."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from highmark.errors import UnsupportedStateError
from highmark.state.dtypes import DTYPES
from highmark.state.leafcodecs import codec_for_kind
from highmark.state.torch import (
    TORCH_CODEC,
    byte_view,
    capture_rng,
    dtype_from_name,
    dtype_from_safetensors,
    dtype_name,
    restore_rng,
    safetensors_dtype,
    writable_byte_view,
)
from highmark.state.tree import check_state_object, flatten

NAMED = [name for name, d in DTYPES.items() if d.st is not None]


def filled(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``dtype`` whose bytes are 0, 1, 2, ... (any dtype, no arithmetic needed)."""
    t = TORCH_CODEC.empty(dtype_name(dtype), shape)
    raw = writable_byte_view(t)
    assert raw is not None
    raw[:] = bytes(i % 251 for i in range(len(raw)))
    return t


def raw_bytes(t: torch.Tensor) -> bytes:
    return b"".join(bytes(c) for c in TORCH_CODEC.chunks(t, 1 << 20))


def header_of(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return dict(json.loads(data[8 : 8 + n]))


@pytest.mark.parametrize("name", NAMED)
def test_safetensors_dtype_matches_what_safetensors_writes(name: str, tmp_path: Path) -> None:
    dtype = dtype_from_name(name)
    save_file({"x": filled(dtype, (2, 2))}, str(tmp_path / "x.safetensors"))
    written = header_of(tmp_path / "x.safetensors")["x"]
    assert isinstance(written, dict)
    assert written["dtype"] == safetensors_dtype(dtype)
    assert dtype_from_safetensors(str(written["dtype"])) == dtype


@pytest.mark.parametrize("name", [n for n, d in DTYPES.items() if d.st is None])
def test_exotic_dtypes_have_no_safetensors_name(name: str) -> None:
    assert safetensors_dtype(dtype_from_name(name)) is None


def test_quantized_dtype_is_not_storable() -> None:
    with pytest.raises(ValueError, match="qint8"):
        dtype_name(torch.qint8)


def test_unknown_safetensors_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="F6"):
        dtype_from_safetensors("F6_E2M3")


def test_byte_view_is_zero_copy() -> None:
    t = torch.arange(4, dtype=torch.int32)
    view = byte_view(t)
    assert bytes(view) == t.numpy().tobytes()
    t[0] = 7
    assert bytes(view[:4]) == (7).to_bytes(4, "little")


def test_byte_view_refuses_a_non_contiguous_tensor() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        byte_view(torch.zeros(3, 4).T)


def test_writable_byte_view_writes_into_the_tensor() -> None:
    t = torch.zeros(2, dtype=torch.float32)
    view = writable_byte_view(t)
    assert view is not None
    view[:] = np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert t.tolist() == [1.5, -2.0]


def test_writable_byte_view_is_none_for_a_non_contiguous_tensor() -> None:
    assert writable_byte_view(torch.zeros(3, 4).T) is None


def test_writable_byte_view_is_none_for_a_conjugate_view() -> None:
    assert writable_byte_view(torch.zeros(2, dtype=torch.complex64).conj()) is None


@pytest.mark.parametrize("name", list(DTYPES))
def test_codec_round_trips_every_dtype_through_bytes(name: str) -> None:
    t = filled(dtype_from_name(name), (3, 2))
    data = raw_bytes(t)
    back = TORCH_CODEC.from_buffer(memoryview(bytearray(data)), name, (3, 2))
    assert back.dtype == t.dtype
    assert raw_bytes(back) == data


def test_codec_chunks_of_a_non_contiguous_tensor_are_bounded_and_in_row_major_order() -> None:
    t = torch.arange(64 * 10, dtype=torch.float64).reshape(64, 10).T  # 10 x 64, strided
    chunks = list(TORCH_CODEC.chunks(t, 1024))
    assert max(len(c) for c in chunks) <= 1024
    assert b"".join(bytes(c) for c in chunks) == t.contiguous().numpy().tobytes()


def test_codec_chunks_of_a_contiguous_tensor_are_one_zero_copy_view() -> None:
    t = torch.arange(1000, dtype=torch.float32)
    (chunk,) = TORCH_CODEC.chunks(t, 16)
    t[0] = 5
    assert bytes(chunk[:4]) == np.float32(5).tobytes()


def test_codec_resolves_conjugate_and_negative_bits_when_writing() -> None:
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    assert raw_bytes(z.conj()) == z.conj().resolve_conj().numpy().tobytes()


def test_codec_writes_a_parameter_that_requires_grad() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    assert raw_bytes(p) == np.ones(3, dtype=np.float32).tobytes()


def test_codec_refuses_sparse_tensors_naming_the_path() -> None:
    with pytest.raises(UnsupportedStateError) as info:
        flatten({"m": {"s": torch.eye(2).to_sparse()}})
    assert info.value.path == "m.s"


def test_codec_refuses_meta_tensors() -> None:
    with pytest.raises(UnsupportedStateError, match="meta"):
        flatten({"m": torch.empty(2, device="meta")})


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated in torch
def test_codec_refuses_quantized_tensors() -> None:
    q = torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)
    with pytest.raises(UnsupportedStateError) as info:
        flatten({"q": q})
    assert info.value.path == "q"


def test_describe_target_gives_a_view_that_writes_into_a_parameter() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    dtype, shape, view = TORCH_CODEC.describe_target(p, "w")
    assert (dtype, shape) == ("float32", (2,))
    assert view is not None
    view[:] = np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert p.tolist() == [1.5, -2.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(()),
        lambda: torch.zeros(0),
        lambda: torch.zeros(0, 3),
        lambda: torch.zeros(3, 1).as_strided((3, 1), (1, 7)),  # contiguous, odd size-1 stride
        lambda: torch.zeros(4, dtype=torch.bfloat16),  # no numpy dtype
        lambda: torch.zeros(2, 3, requires_grad=True),
        lambda: torch.zeros(8)[2:6],  # a view with a storage offset
    ],
    ids=["0-d", "empty", "empty-2d", "odd-stride", "bfloat16", "requires-grad", "offset"],
)
def test_describe_target_views_the_memory_of_any_contiguous_host_tensor(make: Any) -> None:
    t = make()
    dtype, shape, view = TORCH_CODEC.describe_target(t, "w")
    assert (dtype, tuple(shape)) == (dtype_name(t.dtype), tuple(t.shape))
    assert view is not None
    assert len(view) == t.numel() * t.element_size()
    view[:] = bytes(range(1, len(view) + 1))
    assert bytes(byte_view(t.detach())) == bytes(range(1, len(view) + 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(3, 4).T,
        lambda: torch.zeros(2, dtype=torch.complex64).conj(),
        lambda: torch.zeros(2)._neg_view(),
    ],
    ids=["non-contiguous", "conjugate", "negative"],
)
def test_describe_target_has_no_view_where_memory_does_not_hold_the_values(make: Any) -> None:
    t = make()
    dtype, shape, view = TORCH_CODEC.describe_target(t, "w")
    assert (dtype, shape, view) == (dtype_name(t.dtype), tuple(t.shape), None)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]), "nested"),
        (lambda: torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8), "quantized"),
        (lambda: torch.eye(2).to_sparse(), "torch.sparse_coo"),
    ],
    ids=["nested", "quantized", "sparse"],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's notes on these prototypes
def test_an_unstorable_tensor_kind_is_named(make: Any, what: str) -> None:
    with pytest.raises(UnsupportedStateError, match=f"{what} tensors are not storable") as info:
        TORCH_CODEC.describe(make(), "w.x")
    assert info.value.path == "w.x"


def test_describe_target_refuses_what_describe_refuses() -> None:
    with pytest.raises(UnsupportedStateError, match="meta"):
        TORCH_CODEC.describe_target(torch.empty(2, device="meta"), "m")
    with pytest.raises(UnsupportedStateError) as info:
        TORCH_CODEC.describe_target(torch.eye(2).to_sparse(), "s")
    assert info.value.path == "s"


def test_copy_into_copies_a_batch_of_any_layout_into_host_leaves() -> None:
    sources = [
        torch.arange(12, dtype=torch.bfloat16).reshape(3, 4).T,
        torch.tensor([1 + 2j], dtype=torch.complex64).conj(),
        torch.nn.Parameter(torch.ones(2)),
    ]
    dests = [TORCH_CODEC.empty(dtype_name(t.dtype), tuple(t.shape)) for t in sources]
    TORCH_CODEC.copy_into(dests, sources)
    for dest, src in zip(dests, sources, strict=True):
        assert torch.equal(dest, src.detach().resolve_conj())


def test_copy_into_copies_one_at_a_time_on_a_torch_without_batched_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Simulates torch < 2.1 (no torch._foreach_copy_), which this environment cannot install.
    monkeypatch.delattr(torch, "_foreach_copy_")
    sources = [torch.arange(6.0).reshape(2, 3).T, torch.ones(1, dtype=torch.int8)]
    dests = [torch.empty(3, 2), torch.empty(1, dtype=torch.int8)]
    TORCH_CODEC.copy_into(dests, sources)
    assert all(torch.equal(d, s) for d, s in zip(dests, sources, strict=True))


def test_codec_for_kind_torch_is_the_torch_codec() -> None:
    assert codec_for_kind("torch") is TORCH_CODEC


def draws() -> tuple[float, float, float, float]:
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(torch.rand(1))


def test_restore_rng_replays_the_same_draws() -> None:
    random.gauss(0, 1)  # leave a cached gaussian in both generators
    np.random.standard_normal()
    state = capture_rng()
    expected = draws()
    draws()
    restore_rng(state)
    assert draws() == expected


def test_rng_state_is_a_storable_tree() -> None:
    flat = flatten(capture_rng())
    assert {"python.state", "numpy.keys", "torch"} <= set(flat.tensors)


def test_restore_rng_ignores_missing_parts() -> None:
    state = capture_rng()
    expected = draws()
    restore_rng({"torch": state["torch"]})
    assert float(torch.rand(1)) == expected[3]


def test_check_state_object_accepts_model_optimizer_scheduler_and_scaler() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    objects = {
        "model": model,
        "optimizer": opt,
        "scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2),
        "lambda": torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        "scaler": torch.amp.GradScaler("cpu"),
    }
    for name, obj in objects.items():
        flat = check_state_object(name, obj)
        assert all(path.startswith(f"{name}.") for path in flat.tensors)


def test_check_state_object_names_the_object_without_state_dict() -> None:
    with pytest.raises(UnsupportedStateError, match="state_dict") as info:
        check_state_object("loader", object())
    assert info.value.path == "loader"


def test_check_state_object_names_the_key_path_of_an_unsupported_value() -> None:
    class Odd:
        def state_dict(self) -> dict[str, object]:
            return {"inner": {"fn": print}}

        def load_state_dict(self, state: dict[str, object]) -> None:
            pass

    with pytest.raises(UnsupportedStateError) as info:
        check_state_object("odd", Odd())
    assert info.value.path == "odd.inner.fn"
