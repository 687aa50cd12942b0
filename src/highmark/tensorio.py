"""Tensor-level tools over a checkpoint's safetensors files: weight diff and standalone export.

Both work on the files' bytes through the run's :class:`~highmark.store.backend.Storage` (local
disk or an object store), reading the safetensors header themselves (8-byte little-endian length,
JSON header, raw data). No framework is needed, every safetensors dtype is handled (bfloat16 and
float8 are decoded by bit manipulation for the diff), and large tensors are streamed in chunks so
memory stays bounded.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError
from highmark.store.checks import read_header

__all__ = ["TensorEntry", "checkpoint_tensors", "diff_tensors", "export_tensors"]

Progress = Callable[[int], None]
_CHUNK = 8 * 1024 * 1024  # bytes per read when streaming

_NUMPY = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
    "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
}  # fmt: skip
_ITEMSIZE = {"BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor inside a safetensors file of a checkpoint."""

    name: str
    file: str  # path relative to the run root
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        """The size of the tensor's data."""
        return self.end - self.start


def _file_tensors(storage: Any, rel: str) -> list[TensorEntry]:
    """The tensors of one safetensors file, from its header validated by the store's checks."""
    size = storage.size(rel)
    with storage.open_read(rel) as f:
        header = read_header(f, size, rel)
    base = header.data_start
    entries = [
        TensorEntry(name, rel, dtype, tuple(shape), base + begin, base + end)
        for name, (dtype, shape, begin, end) in header.entries.items()
    ]
    return sorted(entries, key=lambda e: e.start)


def checkpoint_tensors(storage: Any, ckpt_dir: str) -> dict[str, TensorEntry]:
    """Every tensor of the checkpoint in ``ckpt_dir`` (relative to the run root), by key path."""
    tensors: dict[str, TensorEntry] = {}
    for name in sorted(storage.listdir(ckpt_dir)):
        if name.endswith(".safetensors"):
            for entry in _file_tensors(storage, posixpath.join(ckpt_dir, name)):
                tensors[entry.name] = entry
    return tensors


def _read_range(storage: Any, entry: TensorEntry) -> Iterator[bytes]:
    """The tensor's bytes in chunks (aligned to 8 bytes, so elements never straddle chunks)."""
    with storage.open_read(entry.file) as f:
        f.seek(entry.start)
        left = entry.nbytes
        while left > 0:
            want = min(_CHUNK, left)
            parts = []
            while want > 0:
                part = f.read(want)
                if not part:
                    raise CorruptCheckpointError(entry.file, f"truncated in tensor {entry.name!r}")
                parts.append(part)
                want -= len(part)
            chunk = b"".join(parts)
            left -= len(chunk)
            yield chunk


def _e4m3_table() -> np.ndarray:
    values = np.empty(256, dtype=np.float64)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        exp, man = (b >> 3) & 0xF, b & 0x7
        if exp == 0xF and man == 0x7:
            values[b] = math.nan
        elif exp == 0:
            values[b] = sign * man / 8 * 2.0**-6
        else:
            values[b] = sign * (1 + man / 8) * 2.0 ** (exp - 7)
    return values


def decode(raw: bytes, dtype: str) -> np.ndarray | None:
    """The elements of a raw little-endian buffer as float64, or None for an unknown dtype."""
    if dtype in _NUMPY:
        out: np.ndarray = np.frombuffer(raw, dtype=_NUMPY[dtype]).astype(np.float64)
        return out
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64)
    if dtype == "F8_E5M2":  # the high byte of a float16
        return (
            (np.frombuffer(raw, dtype="u1").astype(np.uint16) << 8)
            .view(np.float16)
            .astype(np.float64)
        )
    if dtype == "F8_E4M3":
        table: np.ndarray = _e4m3_table()
        decoded: np.ndarray = table[np.frombuffer(raw, dtype="u1")]
        return decoded
    return None


def _stats(storage_a: Any, a: TensorEntry, storage_b: Any, b: TensorEntry) -> dict[str, Any]:
    """Max abs difference, relative L2 distance and cosine similarity of two same-shape tensors."""
    same_bytes, known = True, True
    max_abs, dot, norm_a, norm_b, norm_d = 0.0, 0.0, 0.0, 0.0, 0.0
    for ca, cb in zip(_read_range(storage_a, a), _read_range(storage_b, b), strict=True):
        same_bytes = same_bytes and ca == cb
        xa, xb = decode(ca, a.dtype), decode(cb, b.dtype)
        if xa is None or xb is None:
            known = False
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            d = xb - xa
            if d.size:
                max_abs = max(max_abs, float(np.max(np.abs(d))))
            dot += float(np.dot(xa, xb))
            norm_a += float(np.dot(xa, xa))
            norm_b += float(np.dot(xb, xb))
            norm_d += float(np.dot(d, d))
    result: dict[str, Any] = {"status": "same" if same_bytes else "changed"}
    if not known:
        return {**result, "max_abs_diff": None, "rel_l2": None, "cosine": None}
    na, nb = math.sqrt(norm_a), math.sqrt(norm_b)
    rel = math.sqrt(norm_d) / na if na > 0 else (0.0 if norm_d == 0 else math.inf)
    cosine = dot / (na * nb) if na > 0 and nb > 0 else (1.0 if na == nb == 0 else None)
    return {**result, "max_abs_diff": max_abs, "rel_l2": rel, "cosine": cosine}


def diff_tensors(
    storage_a: Any, dir_a: str, storage_b: Any, dir_b: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Compares two checkpoints tensor by tensor.

    Returns:
        ``{"tensors": [{key, status, dtype, shape, max_abs_diff, rel_l2, cosine}], "added": [...],
        "removed": [...], "changed": [...]}``; status is ``same``, ``changed``, ``added``,
        ``removed`` or ``reshaped`` (dtype or shape differ). ``rel_l2`` is ``|b - a| / |a|``.
    """
    ta, tb = checkpoint_tensors(storage_a, dir_a), checkpoint_tensors(storage_b, dir_b)
    rows: list[dict[str, Any]] = []
    for key in sorted(set(ta) | set(tb)):
        a, b = ta.get(key), tb.get(key)
        ref = a or b
        assert ref is not None
        row: dict[str, Any] = {"key": key, "dtype": ref.dtype, "shape": list(ref.shape)}
        if a is None or b is None:
            row["status"] = "added" if a is None else "removed"
        elif (a.dtype, a.shape) != (b.dtype, b.shape):
            row.update(status="reshaped", dtype=f"{a.dtype} -> {b.dtype}",
                       shape=f"{list(a.shape)} -> {list(b.shape)}")  # fmt: skip
        else:
            row.update(_stats(storage_a, a, storage_b, b))
        if progress is not None:
            progress(ref.nbytes)
        rows.append(row)
    return {
        "tensors": rows,
        "added": [r["key"] for r in rows if r["status"] == "added"],
        "removed": [r["key"] for r in rows if r["status"] == "removed"],
        "changed": [r["key"] for r in rows if r["status"] in ("changed", "reshaped")],
    }


def export_tensors(
    storage: Any,
    ckpt_dir: str,
    out: str,
    key: str | None = "model",
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    checksums: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Writes one standalone safetensors file holding the tensors under ``key``, names stripped.

    With ``key="model"`` the tensor ``model.fc.weight`` is written as ``fc.weight``, so
    ``model.load_state_dict(safetensors.torch.load_file(out))`` reads it. ``key=None`` (or "")
    exports every tensor under its full key path. The file is written to a temporary name next to
    ``out`` and renamed into place, so a failed export never leaves a partial file.
    ``checksums`` (key path -> xxh3-64 hex, from the manifest) are checked while copying; a
    mismatch raises :class:`~highmark.errors.CorruptCheckpointError` naming the file.

    Returns:
        ``{"path", "tensors", "bytes"}``.
    """
    tensors = checkpoint_tensors(storage, ckpt_dir)
    prefix = f"{key}." if key else ""
    chosen = [(name[len(prefix) :], e) for name, e in tensors.items() if name.startswith(prefix)]
    if not chosen:
        tops = sorted({name.split(".", 1)[0] for name in tensors})
        raise ConfigError(f"{ckpt_dir}: no tensors under key {key!r} (top-level keys: {tops})")
    chosen.sort(key=lambda item: (item[1].file, item[1].start))
    header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, entry in chosen:
        header[name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                        "data_offsets": [offset, offset + entry.nbytes]}  # fmt: skip
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # safetensors aligns the data to 8 bytes
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".highmark-export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for _, entry in chosen:
                hasher = xxhash.xxh3_64()
                for chunk in _read_range(storage, entry):
                    hasher.update(chunk)
                    f.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                want = (checksums or {}).get(entry.name)
                if want is not None and hasher.hexdigest() != want:
                    raise CorruptCheckpointError(
                        f"{storage.url.rstrip('/')}/{entry.file}",
                        f"checksum mismatch in tensor {entry.name!r}",
                    )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"path": out, "tensors": len(chosen), "bytes": offset}
