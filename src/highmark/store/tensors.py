"""Tensor-level tools over a checkpoint's safetensors files: weight diff and standalone export.

Both work on the files' bytes through the run's :class:`~highmark.store.storage.Storage` (local
disk or an object store), with no framework: every safetensors dtype is handled (bfloat16 and
float8 are decoded by bit manipulation for the diff), and large tensors are streamed in chunks so
memory stays bounded.

Only verified bytes leave the store: the tensors are those of the files the checkpoint's manifest
names (a stray file in the checkpoint directory is never read), each file's size and header must
be exactly what the manifest records, and every tensor's bytes are checked against the manifest's
xxh3-64 as they stream; a mismatch raises :class:`~highmark.errors.CorruptCheckpointError` naming
the file before any result is returned or any exported file is put in place.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError
from highmark.store.checks import check_header, read_header
from highmark.store.format import read_manifest
from highmark.store.index import step_dir
from highmark.store.restore import checkpoint_path, open_checked

__all__ = [
    "TensorEntry",
    "checkpoint_tensors",
    "decode",
    "diff_tensors",
    "export_checkpoint",
    "export_tensors",
    "is_rng_key",
]

#: Called as data streams: ``progress(bytes_just_done, total_bytes)``.
Progress = Callable[[int, int], None]
_CHUNK = 8 * 1024 * 1024  # bytes per read when streaming
_RNG_WORDS = frozenset({"rng", "generators"})

_NUMPY = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
    "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
}  # fmt: skip


@dataclass(frozen=True)
class TensorEntry:
    """One tensor inside a safetensors file of a checkpoint, with its recorded checksum."""

    name: str
    file: str  # path relative to the run root
    dtype: str  # the safetensors dtype of the file's header
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int
    xxh3: str  # the manifest's xxh3-64 of the tensor's bytes

    @property
    def nbytes(self) -> int:
        """The size of the tensor's data."""
        return self.end - self.start


def is_rng_key(key: str) -> bool:
    """Whether a key path holds random-generator state that a :class:`~highmark.Run` saved.

    That is ``highmark.rng.*`` (Python, NumPy, torch and CUDA states) and the data loaders'
    generator states (``highmark.loaders.NAME.generators.*``, ``...start.rng.*``).

    >>> is_rng_key("highmark.rng.torch"), is_rng_key("model.rng.weight")
    (True, False)
    """
    parts = key.split(".")
    return parts[0] == "highmark" and not _RNG_WORDS.isdisjoint(parts[1:])


def _where(storage: Any, rel: str) -> str:
    return f"{str(storage.url).rstrip('/')}/{rel}"


@contextmanager
def _named(storage: Any) -> Iterator[None]:
    """Re-raises a CorruptCheckpointError naming a run-relative file with the run's location."""
    try:
        yield
    except CorruptCheckpointError as exc:
        text = str(exc)
        problem = text[len(exc.path) + 2 :] if text.startswith(f"{exc.path}: ") else text
        raise CorruptCheckpointError(_where(storage, exc.path), problem) from None


def checkpoint_tensors(
    storage: Any, ckpt_dir: str, manifest: Mapping[str, Any] | None = None
) -> dict[str, TensorEntry]:
    """Every tensor of the checkpoint in ``ckpt_dir`` (relative to the run root), by key path.

    Only the files the manifest names are opened (``manifest`` is read and checked when not
    given); each must have the manifest's size and exactly the header it describes.

    Raises:
        CorruptCheckpointError: naming the manifest or file (with the run's location).
    """
    tensors: dict[str, TensorEntry] = {}
    with _named(storage):
        if manifest is None:
            manifest = read_manifest(storage, ckpt_dir)
        for file in manifest["files"]:
            rel = checkpoint_path(ckpt_dir, file["name"])
            with open_checked(storage, rel, file) as f:
                header = read_header(f, int(file["size"]), rel)
            check_header(header, file, rel)
            sums = {t["name"]: t["xxh3"] for t in file["tensors"]}
            for name, (dtype, shape, begin, end) in header.entries.items():
                start = header.data_start
                entry = TensorEntry(name, rel, dtype, tuple(shape), start + begin, start + end,
                                    str(sums[name]))  # fmt: skip
                tensors[name] = entry
    return tensors


def _read_range(storage: Any, entry: TensorEntry) -> Iterator[bytes]:
    """The tensor's bytes in chunks (aligned to 8 bytes, so elements never straddle chunks).

    The chunks' xxh3-64 is checked against the manifest's once the last one was taken: a caller
    that consumes every chunk gets CorruptCheckpointError, naming the file, on a mismatch.
    """
    hasher = xxhash.xxh3_64()
    with storage.open_read(entry.file) as f:
        f.seek(entry.start)
        left = entry.nbytes
        while left > 0:
            want = min(_CHUNK, left)
            parts = []
            while want > 0:
                part = f.read(want)
                if not part:
                    raise CorruptCheckpointError(
                        _where(storage, entry.file), f"truncated in tensor {entry.name!r}"
                    )
                parts.append(part)
                want -= len(part)
            chunk = b"".join(parts)
            left -= len(chunk)
            hasher.update(chunk)
            yield chunk
    if hasher.hexdigest() != entry.xxh3:
        raise CorruptCheckpointError(
            _where(storage, entry.file), f"checksum mismatch in tensor {entry.name!r}"
        )


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
    storage_a: Any,
    dir_a: str,
    storage_b: Any,
    dir_b: str,
    progress: Progress | None = None,
    rng: bool = False,
) -> dict[str, Any]:
    """Compares two checkpoints tensor by tensor (only verified bytes; see the module docstring).

    The random-generator state a Run saves (:func:`is_rng_key`) is left out unless ``rng``.

    Returns:
        ``{"tensors": [{key, status, dtype, shape, max_abs_diff, rel_l2, cosine}], "added": [...],
        "removed": [...], "changed": [...], "left_out": [...]}``; status is ``same``,
        ``changed``, ``added``, ``removed`` or ``reshaped`` (dtype or shape differ). ``rel_l2`` is
        ``|b - a| / |a|``; ``left_out`` names the RNG tensors not compared.
    """
    ta, tb = checkpoint_tensors(storage_a, dir_a), checkpoint_tensors(storage_b, dir_b)
    keys = sorted(set(ta) | set(tb))
    left_out = [] if rng else [k for k in keys if is_rng_key(k)]
    keys = [k for k in keys if k not in set(left_out)]
    total = sum((ta.get(k) or tb[k]).nbytes for k in keys)
    rows: list[dict[str, Any]] = []
    for key in keys:
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
            progress(ref.nbytes, total)
        rows.append(row)
    return {
        "tensors": rows,
        "added": [r["key"] for r in rows if r["status"] == "added"],
        "removed": [r["key"] for r in rows if r["status"] == "removed"],
        "changed": [r["key"] for r in rows if r["status"] in ("changed", "reshaped")],
        "left_out": left_out,
    }


def _target(out: str, force: bool) -> str:
    """Checks that ``out`` may be written (creating its folder); refuses to overwrite."""
    if os.path.isdir(out):
        raise ConfigError(f"{out}: is a folder; give a file name, or DIR/ to export into a folder")
    if os.path.exists(out) and not force:
        raise ConfigError(f"{out}: already exists; pass --force to overwrite it")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    return out


@contextmanager
def _atomic_file(out: str) -> Iterator[Any]:
    """A new file that replaces ``out`` only when the block succeeds (never a partial file).

    It is created with mode 0o666 less the process's umask, like any file a user's tool writes.
    """
    directory = os.path.dirname(os.path.abspath(out))
    tmp = os.path.join(directory, f".highmark-export-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_tensors(
    storage: Any,
    ckpt_dir: str,
    out: str,
    key: str | None = "model",
    metadata: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Writes one standalone safetensors file holding the tensors under ``key``, names stripped.

    With ``key="model"`` the tensor ``model.fc.weight`` is written as ``fc.weight``, so
    ``model.load_state_dict(safetensors.torch.load_file(out))`` reads it. ``key=None`` (or "")
    exports every tensor under its full key path. Missing parent folders are created; an existing
    ``out`` is replaced only with ``force``. The file is written to a temporary name next to
    ``out`` and renamed into place once every tensor's checksum matched, so a failed export never
    leaves a partial file (see :func:`_atomic_file` for its mode).

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
    with _atomic_file(_target(out, force)) as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _, entry in chosen:
            for chunk in _read_range(storage, entry):  # checked against the manifest at its end
                f.write(chunk)
                if progress is not None:
                    progress(len(chunk), offset)
    return {"path": out, "tensors": len(chosen), "bytes": offset}


def _finite(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics with non-finite floats as None, for strict JSON."""
    return {
        str(k): None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in metrics.items()
    }


def export_checkpoint(
    manager: Any,
    which: str | int,
    out: str,
    key: str | None = "model",
    source: str = "",
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``highmark export``: one checkpoint of ``manager``'s run as a standalone safetensors file.

    ``out`` is a file, or a folder (it exists, or ends with a path separator) that receives
    ``KEY.safetensors`` and ``highmark-export.json`` (step, metrics, source; written after the
    tensors). The file's ``__metadata__`` records ``source`` (the run's location), the step and
    the metrics. See :func:`export_tensors` for the guarantees.

    Returns:
        ``{"path", "tensors", "bytes", "step"}``.
    """
    info = manager.info(which)
    metrics = _finite(dict(info.metrics))
    meta = {"source": f"{source or manager.url}:{info.step}", "step": str(info.step),
            "metrics": json.dumps(metrics, allow_nan=False)}  # fmt: skip
    folder = out.endswith(("/", os.sep)) or os.path.isdir(out)
    target = os.path.join(out, f"{key or 'checkpoint'}.safetensors") if folder else out
    sidecar = os.path.join(out, "highmark-export.json") if folder else None
    if sidecar is not None and os.path.exists(sidecar) and not force:
        raise ConfigError(f"{sidecar}: already exists; pass --force to overwrite it")
    ckpt = step_dir(info.step)
    result = export_tensors(manager.storage, ckpt, target, key or None, meta, progress, force)
    if sidecar is not None:
        with _atomic_file(sidecar) as f:
            f.write(json.dumps({**meta, "metrics": metrics}, indent=2).encode("utf-8"))
    return {**result, "step": info.step}
