"""The dtypes highmark stores (:data:`DTYPES`), and what a restore learns about a target leaf.

Shared by the leaf codecs (:mod:`highmark.state.leafcodecs`), the torch codec
(:mod:`highmark.state.torch`) and the store's file layout and checks; imports nothing of
highmark, so the torch codec, loaded by name, never imports the registry that loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DTYPES", "DType", "Target"]


@dataclass(frozen=True)
class DType:
    """One tensor dtype: its canonical name, item size and safetensors spelling.

    ``st`` is the safetensors dtype string, or ``None`` for a dtype safetensors cannot name; such
    a tensor is stored bytewise (``U8``, shape ``[nbytes]``) with the true dtype in our manifest.
    ``st_bits`` is the width of one safetensors element (4 for ``F4``, whose header shape counts
    the two values packed in each ``float4_e2m1fn_x2`` byte).
    """

    name: str
    itemsize: int
    st: str | None
    st_bits: int = 0

    def header_entry(self, shape: Sequence[int], nbytes: int) -> tuple[str, list[int]]:
        """The safetensors ``(dtype, shape)`` this dtype is written with."""
        if self.st is None or (self.st_bits == 4 and len(shape) == 0):
            return "U8", [nbytes]
        if self.st_bits == 4:
            return self.st, [*shape[:-1], shape[-1] * 2]
        return self.st, list(shape)


def _dt(name: str, itemsize: int, st: str | None, st_bits: int = 0) -> DType:
    return DType(name, itemsize, st, st_bits or itemsize * 8)


#: Every dtype highmark stores, by canonical name (torch's name without ``torch.``; numpy's name).
DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        _dt("float64", 8, "F64"),
        _dt("float32", 4, "F32"),
        _dt("float16", 2, "F16"),
        _dt("bfloat16", 2, "BF16"),
        _dt("int64", 8, "I64"),
        _dt("int32", 4, "I32"),
        _dt("int16", 2, "I16"),
        _dt("int8", 1, "I8"),
        _dt("uint64", 8, "U64"),
        _dt("uint32", 4, "U32"),
        _dt("uint16", 2, "U16"),
        _dt("uint8", 1, "U8"),
        _dt("bool", 1, "BOOL"),
        _dt("complex64", 8, "C64"),
        _dt("float8_e4m3fn", 1, "F8_E4M3"),
        _dt("float8_e5m2", 1, "F8_E5M2"),
        _dt("float8_e4m3fnuz", 1, "F8_E4M3FNUZ"),
        _dt("float8_e5m2fnuz", 1, "F8_E5M2FNUZ"),
        _dt("float8_e8m0fnu", 1, "F8_E8M0"),
        _dt("float4_e2m1fn_x2", 1, "F4", 4),
        _dt("complex128", 16, None),
        _dt("complex32", 4, None),
        _dt("bits8", 1, None),
        _dt("bits16", 2, None),
        _dt("bits1x8", 1, None),
        _dt("bits2x4", 1, None),
        _dt("bits4x2", 1, None),
    )
}


#: What a restore learns about a target leaf: dtype name, shape, and a writable view of its
#: memory (None when that memory does not hold its values contiguously on the host).
Target = tuple[str, tuple[int, ...], memoryview | None]
