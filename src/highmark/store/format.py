"""The on-disk format of one checkpoint: plain safetensors files plus a JSON manifest.

A checkpoint directory holds one safetensors file per top-level key of the state
(``model.safetensors``, ``optimizer.safetensors``; tensors sitting directly at the root go to
``state.safetensors``), whose tensor names are the full key paths, so
``safetensors.torch.load_file`` reads them without highmark. ``manifest.json`` holds the tree's
skeleton and JSON leaves, step, metrics, metadata, and per file its size, data start and xxh3-64
checksum, and per tensor its true dtype, shape, data offsets, xxh3-64 and kind (torch/numpy). The
manifest carries a checksum of itself.

Writing streams from the live tensors, tensor by tensor (a non-contiguous or device tensor is
copied in blocks of 1/16 of the state, between 1 and 16 MiB), hashing as it goes. Within a file,
tensors are ordered by decreasing item size so each one starts at an offset aligned to its size.

Reading trusts nothing: header lengths are checked against the file size before anything is
allocated, the header is parsed and validated (offsets contiguous and in bounds, dtypes known,
byte lengths matching shapes, names matching the manifest), and every tensor read is checked
against its checksum. Nothing is ever unpickled. On local disk, new tensors are copy-on-write
views of the memory-mapped file (no copy; only the pages of the tensors asked for are read; writing
to them never reaches the file); ``into=`` reads straight into the existing tensors' memory. On
other storage, the needed byte ranges are read with seek + readinto.
"""

from __future__ import annotations

import io
import json
import logging
import math
import mmap
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
import xxhash

from highmark.__about__ import __version__
from highmark.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleFormatError,
)
from highmark.store.backend import Storage
from highmark.tree import (
    DTYPES,
    DType,
    FlatTree,
    LeafCodec,
    codec_for_kind,
    flatten,
    select,
    tensor_kinds,
    top_level_keys,
    unflatten,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "estimate_size",
    "read_checkpoint",
    "read_manifest",
    "verify_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROOT_FILE = "state"
MAX_HEADER = 100 << 20  # the limit safetensors itself applies
MAX_MANIFEST = 256 << 20
_COPY_BLOCK = (1 << 20, 16 << 20)  # bounds of a block copied from a non-contiguous/device tensor
_HASH_BLOCK = 16 << 20  # read size when checksumming a whole file
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ST_BITS = {d.st: d.st_bits for d in DTYPES.values() if d.st is not None}


def _rel(ckpt_dir: str, name: str) -> str:
    return f"{ckpt_dir}/{name}" if ckpt_dir else name


def _hex(digest: int) -> str:
    return f"{digest:016x}"


# --------------------------------------------------------------------------- planning a write


@dataclass
class _Entry:
    name: str
    kind: str
    codec: LeafCodec
    leaf: Any
    dtype: DType
    shape: tuple[int, ...]
    nbytes: int
    begin: int = 0


@dataclass
class _FilePlan:
    name: str
    entries: list[_Entry]
    header: bytes  # 8-byte length + padded JSON header

    @property
    def size(self) -> int:
        return len(self.header) + sum(e.nbytes for e in self.entries)


def _file_stem(key: str | int, used: set[str]) -> str:
    """A safe, unique (case-insensitively) file stem derived from a top-level key."""
    stem = _UNSAFE.sub("_", str(key))[:100].lstrip(".") or "_"
    candidate, n = stem, 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate.lower())
    return candidate


def _groups(flat: FlatTree) -> list[tuple[str | int | None, list[str]]]:
    """Tensor key paths grouped by top-level container; root-level tensors under ``None``."""
    top = top_level_keys(flat.skeleton)
    if not top:
        return [(None, list(flat.tensors))] if flat.tensors else []
    groups: list[tuple[str | int | None, list[str]]] = []
    root: list[str] | None = None
    for key, node in top:
        if not isinstance(node, dict):
            continue
        if "tensor" in node:
            if root is None:
                root = []
                groups.append((None, root))
            root.append(str(key))
            continue
        paths = [f"{key}.{p}" if p else str(key) for p in tensor_kinds(node)]
        if paths:
            groups.append((key, paths))
    return groups


def _plan(flat: FlatTree) -> list[_FilePlan]:
    plans: list[_FilePlan] = []
    used: set[str] = set()
    for key, paths in _groups(flat):
        entries = []
        for path in paths:
            leaf = flat.tensors[path]
            kind = type(leaf).__module__.partition(".")[0]
            codec = codec_for_kind(kind)
            dtype_name, shape = codec.describe(leaf, path)
            dtype = DTYPES[dtype_name]
            entries.append(
                _Entry(
                    path, codec.kind, codec, leaf, dtype, shape, math.prod(shape) * dtype.itemsize
                )
            )
        entries.sort(key=lambda e: -e.dtype.itemsize)  # stable: tree order within an item size
        header: dict[str, Any] = {
            "__metadata__": {"format": "pt" if any(e.kind == "torch" for e in entries) else "np"}
        }
        offset = 0
        for e in entries:
            e.begin = offset
            st, st_shape = e.dtype.header_entry(e.shape, e.nbytes)
            header[e.name] = {
                "dtype": st,
                "shape": st_shape,
                "data_offsets": [offset, offset + e.nbytes],
            }
            offset += e.nbytes
        text = json.dumps(header, separators=(",", ":")).encode("ascii")
        text += b" " * (-len(text) % 8)
        stem = ROOT_FILE if key is None else key
        plans.append(
            _FilePlan(
                f"{_file_stem(stem, used)}.safetensors",
                entries,
                len(text).to_bytes(8, "little") + text,
            )
        )
    return plans


# --------------------------------------------------------------------------- manifest encoding


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def _encode_manifest(manifest: dict[str, Any]) -> bytes:
    manifest["checksum"] = _hex(xxhash.xxh3_64_intdigest(_canonical(manifest)))
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items())
    return f"{{\n{lines}\n}}\n".encode("ascii")  # one top-level field per line


def _check_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be JSON-serialisable: {exc}") from None


def estimate_size(flat: FlatTree) -> int:
    """The bytes :func:`write_checkpoint` will write for ``flat`` (a close upper bound)."""
    plans = _plan(flat)
    skeleton = len(json.dumps(flat.skeleton))
    per_tensor = sum(len(e.name) + 160 for p in plans for e in p.entries)
    return sum(p.size for p in plans) + skeleton + per_tensor + 200 * len(plans) + 4096


def write_checkpoint(
    storage: Storage,
    ckpt_dir: str,
    flat: FlatTree,
    *,
    step: int,
    metrics: dict[str, Any],
    metadata: dict[str, Any],
    created: float,
) -> dict[str, Any]:
    """Write the tensor files of ``flat`` and then ``manifest.json`` into ``ckpt_dir``.

    Streams each tensor from its live memory (no copy of the state), hashing as it writes. Does not
    commit: the caller commits the directory. Returns the manifest.

    Raises:
        ConfigError: when metrics or metadata are not JSON-serialisable.
        UnsupportedStateError: when a leaf cannot be stored.
        CheckpointError: when a tensor changed size while it was being written.
    """
    _check_json("metrics", metrics)
    _check_json("metadata", metadata)
    files = []
    plans = _plan(flat)
    total = sum(e.nbytes for p in plans for e in p.entries)
    block = min(max(total // 16, _COPY_BLOCK[0]), _COPY_BLOCK[1])
    for plan in plans:
        rel = _rel(ckpt_dir, plan.name)
        file_hash = xxhash.xxh3_64(plan.header)
        tensors = []
        with storage.open_write(rel) as f:
            f.write(plan.header)
            for e in plan.entries:
                hasher = xxhash.xxh3_64()
                written = 0
                for chunk in e.codec.chunks(e.leaf, block):
                    f.write(chunk)
                    hasher.update(chunk)
                    file_hash.update(chunk)
                    written += len(chunk)
                    del chunk  # let a copied block go before the next one is made
                if written != e.nbytes:
                    raise CheckpointError(
                        f"{e.name}: wrote {written} bytes, expected {e.nbytes} "
                        "(was the tensor resized during the save?)"
                    )
                tensors.append(
                    {
                        "name": e.name,
                        "kind": e.kind,
                        "dtype": e.dtype.name,
                        "shape": list(e.shape),
                        "data_offsets": [e.begin, e.begin + e.nbytes],
                        "xxh3": hasher.hexdigest(),
                    }
                )
        files.append(
            {
                "name": plan.name,
                "size": plan.size,
                "data_start": len(plan.header),
                "xxh3": file_hash.hexdigest(),
                "tensors": tensors,
            }
        )
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "highmark": __version__,
        "step": step,
        "created": created,
        "metrics": metrics,
        "metadata": metadata,
        "skeleton": flat.skeleton,
        "files": files,
    }
    storage.write_bytes(_rel(ckpt_dir, MANIFEST), _encode_manifest(manifest))
    return manifest


# --------------------------------------------------------------------------- validation


def _is_int(value: Any, minimum: int = 0) -> bool:
    return type(value) is int and value >= minimum


def _plain_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name.endswith(".safetensors")
        and not name.startswith(".")
        and not any(c in name for c in "/\\\x00:")
    )


def _validate_manifest(m: Any, rel: str) -> None:
    def bad(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(rel, message)

    if not isinstance(m, dict):
        raise bad("not a JSON object")
    version = m.get("format")
    if type(version) is not int or version < 1:
        raise bad(f"no valid format version (got {version!r})")
    if version > FORMAT_VERSION:
        raise IncompatibleFormatError(
            f"{rel}: written in checkpoint format {version}; this highmark ({__version__}) reads "
            f"format {FORMAT_VERSION} and older: upgrade highmark"
        )
    checksum = m.get("checksum")
    if not isinstance(checksum, str) or checksum != _hex(xxhash.xxh3_64_intdigest(_canonical(m))):
        raise bad("manifest checksum mismatch (the manifest is damaged or was edited)")
    if not _is_int(m.get("step")) or not isinstance(m.get("created"), (int, float)):
        raise bad("missing or invalid step/created")
    if not isinstance(m.get("metrics"), dict) or not isinstance(m.get("metadata"), dict):
        raise bad("missing or invalid metrics/metadata")
    try:
        kinds = tensor_kinds(m.get("skeleton"))
    except (ValueError, RecursionError) as exc:
        raise bad(f"invalid skeleton: {exc}") from None
    files = m.get("files")
    if not isinstance(files, list):
        raise bad("missing file list")
    seen_files: set[str] = set()
    seen: set[str] = set()
    for f in files:
        if not isinstance(f, dict) or not _plain_name(f.get("name")):
            raise bad(f"file entry with an unsafe or invalid name: {str(f)[:120]}")
        name = f["name"]
        if name.lower() in seen_files:
            raise bad(f"file {name!r} listed twice")
        seen_files.add(name.lower())
        ok = _is_int(f.get("size")) and _is_int(f.get("data_start"), 8)
        if not ok or not _HEX16.match(str(f.get("xxh3"))) or not isinstance(f.get("tensors"), list):
            raise bad(f"file {name!r}: missing or invalid size/data_start/xxh3/tensors")
        end = 0
        for t in f["tensors"]:
            tname = t.get("name") if isinstance(t, dict) else None
            if not isinstance(tname, str) or tname in seen or tname not in kinds:
                raise bad(f"file {name!r}: tensor {tname!r} is duplicated or not in the skeleton")
            seen.add(tname)
            _validate_tensor(t, kinds[tname], f"file {name!r}, tensor {tname!r}", bad)
            if t["data_offsets"][0] != end:
                raise bad(f"file {name!r}, tensor {tname!r}: data offsets are not contiguous")
            end = t["data_offsets"][1]
        if f["data_start"] + end != f["size"]:
            raise bad(f"file {name!r}: size {f['size']} does not match its tensors")
    missing = set(kinds) - seen
    if missing:
        raise bad(f"tensors in the skeleton but in no file: {sorted(missing)[:5]}")


def _numpy_dtype(name: str) -> bool:
    try:
        return bool(np.dtype(name).name == name)
    except TypeError:
        return False


def _validate_tensor(t: dict[str, Any], kind: str, where: str, bad: Any) -> None:
    dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if t.get("kind") != kind or dtype not in DTYPES or not _HEX16.match(str(t.get("xxh3"))):
        raise bad(f"{where}: invalid kind/dtype/xxh3")
    if not isinstance(shape, list) or not all(_is_int(n) for n in shape):
        raise bad(f"{where}: invalid shape {shape!r:.80}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise bad(f"{where}: invalid data offsets")
    if kind == "numpy" and not _numpy_dtype(dtype):
        raise bad(f"{where}: dtype {dtype} cannot be a numpy array")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype].itemsize:
        raise bad(f"{where}: byte length does not match dtype and shape")


def read_manifest(storage: Storage, ckpt_dir: str) -> dict[str, Any]:
    """Read and validate the manifest of a checkpoint.

    Raises:
        CorruptCheckpointError: naming the manifest, when it is missing, oversized, not JSON, fails
            its checksum or is malformed (including file names that are not plain names).
        IncompatibleFormatError: when it was written in a newer format (names both versions).
    """
    rel = _rel(ckpt_dir, MANIFEST)
    try:
        size = storage.size(rel)
        if size > MAX_MANIFEST:
            raise CorruptCheckpointError(rel, f"manifest of {size} bytes is implausibly large")
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        raise CorruptCheckpointError(rel, "manifest.json is missing") from None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(rel, f"not valid JSON: {str(exc)[:200]}") from None
    _validate_manifest(manifest, rel)
    return dict(manifest)


@dataclass
class _Header:
    data_start: int
    entries: dict[str, tuple[str, list[int], int, int]]  # name -> (st dtype, shape, begin, end)


def _read_exact(f: BinaryIO, n: int, rel: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptCheckpointError(rel, "file is truncated")
    return data


def _read_header(f: BinaryIO, file_size: int, rel: str) -> _Header:
    """Parse and validate a safetensors header, allocating nothing the file size does not cover."""

    def bad(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(rel, f"not a valid safetensors file: {message}")

    if file_size < 8:
        raise bad(f"{file_size} bytes is too small")
    f.seek(0)
    n = int.from_bytes(_read_exact(f, 8, rel), "little")
    if n < 2 or n > file_size - 8 or n > MAX_HEADER:
        raise bad(f"header length {n} is impossible for a file of {file_size} bytes")
    try:
        header = json.loads(_read_exact(f, n, rel).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"header is not JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise bad("__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            raise bad(f"entry {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ST_BITS:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r:.40}")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise bad(f"tensor {name!r} has an invalid shape")
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
        ):
            raise bad(f"tensor {name!r} has invalid data offsets")
        begin, end = offsets
        if end < begin or math.prod(shape) * _ST_BITS[dtype] != 8 * (end - begin):
            raise bad(f"tensor {name!r}: byte length {end - begin} does not match {dtype}{shape}")
        entries[name] = (dtype, shape, begin, end)
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != position:
            raise bad(f"tensor {name!r}: data offsets overlap or leave a gap")
        position = end
    if 8 + n + position != file_size:
        raise bad(f"data of {position} bytes does not fill the file of {file_size} bytes")
    return _Header(8 + n, entries)


def _check_header(header: _Header, file: Mapping[str, Any], rel: str) -> None:
    """Check that a validated header describes exactly the tensors the manifest lists."""
    expected = {t["name"]: t for t in file["tensors"]}
    if set(header.entries) != set(expected) or header.data_start != file["data_start"]:
        raise CorruptCheckpointError(rel, "header does not match the manifest (tensor names)")
    for name, (st, st_shape, begin, end) in header.entries.items():
        t = expected[name]
        want = DTYPES[t["dtype"]].header_entry(t["shape"], end - begin)
        if (st, st_shape) != want or [begin, end] != t["data_offsets"]:
            raise CorruptCheckpointError(
                rel, f"header entry of {name!r} does not match the manifest"
            )


# --------------------------------------------------------------------------- reading


def _readinto(f: BinaryIO, start: int, view: memoryview, rel: str) -> None:
    f.seek(start)
    while len(view):
        n = cast(Any, f).readinto(view)
        if not n:
            raise CorruptCheckpointError(rel, "file is truncated")
        view = view[n:]


def _open(storage: Storage, rel: str) -> BinaryIO:
    path = storage.local_path(rel) if storage.is_local else None
    if path is not None:
        return open(path, "rb", buffering=0)  # raw reads, straight into tensors
    return storage.open_read(rel)


def _targets(into: Any, keys: Sequence[str] | None) -> dict[str, tuple[Any, LeafCodec]]:
    """The tensors of ``into`` by key path in the restored tree, with their codecs."""
    if into is None:
        return {}
    flat = flatten(into)
    kinds = tensor_kinds(flat.skeleton)
    found = {p: (leaf, codec_for_kind(kinds[p])) for p, leaf in flat.tensors.items()}
    if keys is not None and len(keys) == 1:
        key = keys[0]
        if not any(p == key or p.startswith(key + ".") for p in found):
            found = {(f"{key}.{p}" if p else key): v for p, v in found.items()}
    return found


def read_checkpoint(
    storage: Storage,
    ckpt_dir: str,
    manifest: Mapping[str, Any],
    *,
    keys: Sequence[str] | None = None,
    into: Any = None,
    verify: bool = True,
) -> Any:
    """Read a checkpoint's tree, or the part of it under ``keys``, reading only those bytes.

    ``into`` is an existing tree (the restored one, or, when ``keys`` names one key path, the
    subtree at that path, e.g. ``model.state_dict()`` for ``keys=["model"]``) whose tensors are
    filled in place: bytes are read straight into their memory. Tensors not in ``into`` come back
    as new host tensors: copy-on-write views of the memory-mapped file on local disk, read into
    fresh memory elsewhere. With ``verify``, every tensor read is checked against its xxh3-64.

    Raises:
        ConfigError: a key path not in the checkpoint, or ``into`` tensors that do not match.
        CorruptCheckpointError: naming the file, for a missing, truncated, hostile or damaged file.
    """
    skeleton = manifest["skeleton"]
    if keys is not None:
        skeleton = select(skeleton, keys)
    kinds = tensor_kinds(skeleton)
    targets = _targets(into, keys)
    extra = sorted(set(targets) - set(kinds))
    if extra:
        hint = "" if keys else " (to fill a subtree such as model.state_dict(), pass keys=[...])"
        raise ConfigError(f"`into` has tensors the checkpoint does not hold: {extra[:10]}{hint}")
    out: dict[str, Any] = {}
    for file in manifest["files"]:
        wanted = [t for t in file["tensors"] if t["name"] in kinds]
        if wanted:
            _read_file(storage, _rel(ckpt_dir, file["name"]), file, wanted, targets, verify, out)
    return unflatten(skeleton, out)


def _read_file(
    storage: Storage,
    rel: str,
    file: Mapping[str, Any],
    wanted: list[dict[str, Any]],
    targets: Mapping[str, tuple[Any, LeafCodec]],
    verify: bool,
    out: dict[str, Any],
) -> None:
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        raise CorruptCheckpointError(rel, "file is missing") from None
    if size != file["size"]:
        raise CorruptCheckpointError(rel, f"size is {size} bytes, the manifest says {file['size']}")
    with _open(storage, rel) as f:
        header = _read_header(f, size, rel)
        _check_header(header, file, rel)
        mapped: memoryview | None = None
        for t in sorted(wanted, key=lambda t: int(t["data_offsets"][0])):
            name, dtype, shape = t["name"], t["dtype"], tuple(t["shape"])
            start = header.data_start + t["data_offsets"][0]
            nbytes = t["data_offsets"][1] - t["data_offsets"][0]
            dest, codec = targets.get(name, (None, codec_for_kind(t["kind"])))
            if dest is None and nbytes and isinstance(f, io.FileIO):
                # Local file, new tensor: a copy-on-write view of the mapped file (zero copy;
                # only the pages of the tensors read are touched).
                if mapped is None:
                    mapped = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
                window = mapped[start : start + nbytes]
                _check_tensor(window, t, rel, verify)
                out[name] = codec.from_buffer(window, dtype, shape)
                continue
            if dest is not None:
                have = codec.describe(dest, name)
                if have != (dtype, shape):
                    raise ConfigError(
                        f"{name}: the checkpoint holds {dtype}{list(shape)}, "
                        f"`into` has {have[0]}{list(have[1])}"
                    )
            direct = None if dest is None else codec.writable_bytes(dest)
            leaf = dest if direct is not None else codec.empty(dtype, shape)
            view = direct if direct is not None else codec.writable_bytes(leaf)
            assert view is not None
            _readinto(f, start, view, rel)
            _check_tensor(view, t, rel, verify)
            if dest is not None and leaf is not dest:
                codec.assign(dest, leaf)
            out[name] = dest if dest is not None else leaf


def _check_tensor(view: memoryview, t: Mapping[str, Any], rel: str, verify: bool) -> None:
    if verify and xxhash.xxh3_64_hexdigest(view) != t["xxh3"]:
        raise CorruptCheckpointError(rel, f"checksum mismatch in tensor {t['name']!r}")


def _problem(exc: CorruptCheckpointError) -> str:
    text = str(exc)
    return text[len(exc.path) + 2 :] if text.startswith(f"{exc.path}: ") else text


def _file_hash(f: BinaryIO, size: int) -> str:
    hasher = xxhash.xxh3_64()
    buf = bytearray(min(_HASH_BLOCK, max(size, 1)))
    view = memoryview(buf)
    f.seek(0)
    while True:
        n = cast(Any, f).readinto(view)
        if not n:
            break
        hasher.update(view[:n])
    return hasher.hexdigest()


def verify_checkpoint(
    storage: Storage, ckpt_dir: str, manifest: Mapping[str, Any] | None = None
) -> list[tuple[str, str]]:
    """Check a checkpoint's manifest and files; returns every ``(relpath, problem)`` found.

    Checks for each file: present, size, header valid and matching the manifest, xxh3-64 of the
    whole file. Never raises for damage (an empty list means intact).
    """
    if manifest is None:
        try:
            manifest = read_manifest(storage, ckpt_dir)
        except CorruptCheckpointError as exc:
            return [(_rel(ckpt_dir, MANIFEST), _problem(exc))]
        except (IncompatibleFormatError, OSError) as exc:
            return [(_rel(ckpt_dir, MANIFEST), str(exc))]
    problems: list[tuple[str, str]] = []
    for file in manifest["files"]:
        rel = _rel(ckpt_dir, file["name"])
        try:
            problem = _verify_file(storage, rel, file)
        except CorruptCheckpointError as exc:
            problem = _problem(exc)
        except OSError as exc:
            problem = f"unreadable: {exc}"
        if problem:
            problems.append((rel, problem))
    return problems


def _verify_file(storage: Storage, rel: str, file: Mapping[str, Any]) -> str | None:
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        return "file is missing"
    if size != file["size"]:
        return f"size is {size} bytes, the manifest says {file['size']}"
    with _open(storage, rel) as f:
        _check_header(_read_header(f, size, rel), file, rel)
        digest = _file_hash(f, size)
    if digest != file["xxh3"]:
        return f"checksum mismatch (xxh3 {digest}, the manifest says {file['xxh3']})"
    return None
