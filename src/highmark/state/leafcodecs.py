"""Leaf codecs: how the store reads and writes the bytes of each kind of tensor leaf.

A *leaf codec* (:class:`LeafCodec`) describes, chunks, allocates and rebuilds one kind of tensor
leaf, keyed by the leaf's top-level module: numpy's (:class:`NumpyCodec`) is built in; torch's
lives in :mod:`highmark.state.torch` and is imported lazily, by name, by :func:`codec_for_kind`
the first time a torch tensor is met or must be rebuilt, so this module (and the tree and store
built on it) never imports torch itself. The dtypes are :mod:`highmark.state.dtypes`'.
"""

from __future__ import annotations

import importlib
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from highmark.errors import UnsupportedStateError
from highmark.state.dtypes import DTYPES, Target

__all__ = ["LeafCodec", "NumpyCodec", "codec_for_kind", "has_codec"]


class LeafCodec(Protocol):
    """How the store reads and writes the bytes of one kind of tensor leaf."""

    kind: str

    def describe(self, leaf: Any, path: str) -> tuple[str, tuple[int, ...]]:
        """The leaf's canonical dtype name and shape; UnsupportedStateError when unstorable."""
        ...

    def chunks(self, leaf: Any, max_bytes: int) -> Iterator[memoryview]:
        """The leaf's bytes (row-major, little-endian) as views, copying at most ``max_bytes``
        at a time (only a non-contiguous, non-CPU or big-endian leaf is copied)."""
        ...

    def empty(self, dtype: str, shape: tuple[int, ...]) -> Any:
        """A new, uninitialised leaf on the host."""
        ...

    def from_buffer(self, buffer: memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
        """A leaf over ``buffer`` (writable, exactly the leaf's bytes) without copying."""
        ...

    def layout_key(self, leaf: Any) -> Hashable:
        """A cheap key of what a host copy of the (storable) leaf depends on: dtype and shape."""
        ...

    def copy_into(self, dests: Sequence[Any], leaves: Sequence[Any]) -> None:
        """Copies each leaf (any layout or device) into the host leaf from :meth:`empty` of the
        same dtype and shape, releasing the GIL for the bulk of the work."""
        ...

    def writable_bytes(self, leaf: Any) -> memoryview | None:
        """A writable byte view of the leaf's memory, or None when it is not contiguous host
        memory (then the store reads into a temporary leaf and calls :meth:`assign`)."""
        ...

    def describe_target(self, leaf: Any, path: str) -> Target:
        """:meth:`describe` and :meth:`writable_bytes` at once, for a restore's target leaf."""
        ...

    def assign(self, dest: Any, src: Any) -> None:
        """Copy ``src`` (same dtype and shape, host memory) into ``dest`` in place."""
        ...

    def version(self, leaf: Any) -> int | None:
        """A counter that changes whenever the leaf is modified in place (torch's version
        counter), or None for a kind that has none (then a deferred snapshot copies it at once)."""
        ...


class NumpyCodec:
    """The leaf codec of numpy arrays (little-endian bytes, any dtype in :data:`DTYPES`)."""

    kind = "numpy"

    def describe(self, leaf: Any, path: str) -> tuple[str, tuple[int, ...]]:
        if type(leaf) is not np.ndarray:
            raise UnsupportedStateError(
                path, f"numpy {type(leaf).__qualname__} is not storable (plain ndarray only)"
            )
        name = leaf.dtype.name
        if name not in DTYPES or leaf.dtype.fields is not None:
            raise UnsupportedStateError(path, f"numpy dtype {leaf.dtype} is not storable")
        return name, tuple(int(n) for n in leaf.shape)

    def chunks(self, leaf: Any, max_bytes: int) -> Iterator[memoryview]:
        arr: np.ndarray[Any, Any] = leaf
        little = arr.dtype.newbyteorder("<")
        if arr.flags.c_contiguous and arr.dtype == little:
            if arr.nbytes:
                yield arr.reshape(-1).view(np.uint8).data
            return
        yield from _chunked(arr, max_bytes, lambda a: np.ascontiguousarray(a, dtype=little))

    def empty(self, dtype: str, shape: tuple[int, ...]) -> Any:
        return np.empty(shape, dtype=np.dtype(dtype))

    def from_buffer(self, buffer: memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
        if len(buffer) == 0:
            return self.empty(dtype, shape)
        return np.frombuffer(buffer, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)

    def layout_key(self, leaf: Any) -> Hashable:
        return (leaf.dtype, leaf.shape)

    def copy_into(self, dests: Sequence[Any], leaves: Sequence[Any]) -> None:
        for dest, leaf in zip(dests, leaves, strict=True):
            np.copyto(dest, leaf)  # to native byte order, too

    def writable_bytes(self, leaf: Any) -> memoryview | None:
        arr: np.ndarray[Any, Any] = leaf
        if not (arr.flags.c_contiguous and arr.flags.writeable) or arr.dtype.byteorder == ">":
            return None
        return arr.reshape(-1).view(np.uint8).data

    def describe_target(self, leaf: Any, path: str) -> Target:
        dtype, shape = self.describe(leaf, path)
        return dtype, shape, self.writable_bytes(leaf)

    def assign(self, dest: Any, src: Any) -> None:
        np.copyto(dest, src)

    def version(self, leaf: Any) -> int | None:
        return None  # numpy counts no in-place writes


def _chunked(arr: Any, max_bytes: int, contiguous: Any) -> Iterator[memoryview]:
    """Row blocks of a numpy array as contiguous byte views, at most ~``max_bytes`` each."""
    if arr.size == 0:
        return
    if arr.ndim == 0 or arr.nbytes <= max_bytes:
        yield contiguous(arr).reshape(-1).view(np.uint8).data
        return
    row = arr.nbytes // arr.shape[0]
    if row > max_bytes:
        for i in range(arr.shape[0]):
            yield from _chunked(arr[i], max_bytes, contiguous)
        return
    step = max(1, max_bytes // row)
    for i in range(0, arr.shape[0], step):
        yield contiguous(arr[i : i + step]).reshape(-1).view(np.uint8).data


_NUMPY = NumpyCodec()
#: Leaf codecs by the leaf's top-level module: an instance, or "module:attribute" loaded lazily.
_CODECS: dict[str, LeafCodec | str] = {"numpy": _NUMPY, "torch": "highmark.state.torch:TORCH_CODEC"}


def codec_for_kind(kind: str) -> LeafCodec:
    """The leaf codec for ``kind`` ("numpy" or "torch"); the torch one is imported here, lazily.

    This is the one place highmark imports a module by name, so that the store can give back torch
    tensors without importing torch itself.

    Raises:
        KeyError: when no codec is registered for ``kind``.
    """
    codec = _CODECS[kind]
    if isinstance(codec, str):
        module, _, attr = codec.partition(":")
        codec = getattr(importlib.import_module(module), attr)
        _CODECS[kind] = codec
    assert not isinstance(codec, str)
    return codec


def has_codec(kind: str) -> bool:
    """Whether a leaf codec is registered for ``kind`` (a leaf's top-level module name)."""
    return kind in _CODECS
