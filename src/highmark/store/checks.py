"""Validation of hostile checkpoint input: safetensors headers, manifests and JSON documents.

Everything read from storage is checked before it is used: a header length against the file size
before anything is allocated, a JSON document's size and what parsing it may allocate before it is
parsed (:func:`load_json`), JSON well-formedness and nesting, dtypes, shapes (at most
:data:`MAX_DIMS` dimensions) against byte lengths, offsets contiguous and in bounds, file names
that are plain names, and the manifest's own checksum. Failures raise
:class:`~highmark.errors.CorruptCheckpointError` naming the file.

The limits are shared with the writer, which refuses to save what a reader would refuse
(:func:`document_problem`, :func:`shape_problem`, :data:`MAX_HEADER`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import xxhash

from highmark.__about__ import __version__
from highmark.errors import CorruptCheckpointError, IncompatibleFormatError
from highmark.state.dtypes import DTYPES
from highmark.state.skeleton import MAX_DEPTH, tensor_kinds

__all__ = [
    "FORMAT_VERSION",
    "MAX_DIMS",
    "MAX_HEADER",
    "MAX_JSON",
    "PARSE_FACTOR",
    "Header",
    "canonical",
    "check_header",
    "document_problem",
    "file_digest",
    "hex64",
    "json_depth",
    "load_json",
    "parse_cost",
    "read_header",
    "shape_problem",
    "valid_run_id",
    "validate_manifest",
]

FORMAT_VERSION = 2  # 2: a file's xxh3 is derived from its header and tensor digests (file_digest)
MAX_HEADER = 100 << 20  # the limit safetensors itself applies
MAX_JSON = 64 << 20  # the largest manifest or index read (and written)
#: Parsing a JSON document may allocate at most this many times its size (by :func:`parse_cost`).
PARSE_FACTOR = 32
MAX_DIMS = 64  # numpy's limit (NPY_MAXDIMS), for every tensor
_MAX_NBYTES = (1 << 63) - 1  # what numpy and torch can index
_PARSE_SLACK = 1 << 16  # lets tiny documents through the factor
_HEX16 = re.compile(r"[0-9a-f]{16}")
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_ST_BITS = {d.st: d.st_bits for d in DTYPES.values() if d.st is not None}


def parse_cost(data: bytes) -> int:
    """An upper bound of the bytes ``json.loads`` allocates for ``data``, counted, not parsed.

    Each object, array, key, value and string is charged the most it costs in CPython (a small
    dict ~200 bytes, a list ~100, a dict entry ~64, a list slot and a number ~48, a string ~64
    plus its characters at up to 4 bytes each, the decoder 4 KiB); a handful of ``bytes.count``
    passes, no parsing.
    """
    objects, arrays = data.count(b"{"), data.count(b"[")
    pairs, items = data.count(b":"), data.count(b",")
    strings = data.count(b'"') // 2
    values = items + pairs + arrays + 1
    wide = not data.isascii() or (b"\\" in data and b"\\u" in data)  # memchr first: faster
    width = 4 if wide else 1
    nodes = 200 * objects + 100 * arrays + 64 * pairs + 48 * values + 64 * strings
    return nodes + width * len(data) + 4096  # the last term: the decoder itself


def document_problem(data: bytes) -> str | None:
    """Why a JSON document of these bytes is refused before parsing (too large, or too costly to
    parse: more than :data:`PARSE_FACTOR` times its size), or None."""
    if len(data) > MAX_JSON:
        return f"{len(data)} bytes is larger than the limit of {MAX_JSON} bytes"
    cost = parse_cost(data)
    if cost > PARSE_FACTOR * len(data) + _PARSE_SLACK:
        return (
            f"parsing its {len(data)} bytes could take {cost} bytes of memory, more than "
            f"{PARSE_FACTOR} times its size (the limit)"
        )
    return None


def load_json(data: bytes, rel: str) -> Any:
    """Parses a JSON document read from storage, after checking what parsing may allocate.

    Raises:
        CorruptCheckpointError: naming ``rel``, when the document is too large, too costly to
            parse (:func:`document_problem`), not UTF-8 JSON, or nested too deeply to parse.
    """
    problem = document_problem(data)
    if problem is not None:
        raise CorruptCheckpointError(rel, f"JSON refused before parsing: {problem}")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(rel, f"not valid JSON: {str(exc)[:200]}") from None


def json_depth(value: Any, limit: int) -> int:
    """How deep a parsed JSON value nests (a scalar is 0), counted up to ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > limit:
                return depth
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def shape_problem(shape: Sequence[int], itemsize: int) -> str | None:
    """Why a tensor of this shape (ints >= 0) cannot be stored and read back (too many
    dimensions, or more elements than numpy and torch can index), or None."""
    if len(shape) > MAX_DIMS:
        return f"{len(shape)} dimensions, more than the limit of {MAX_DIMS}"
    elements = math.prod(shape) or math.prod(n for n in shape if n)  # empty: the others count
    if elements * itemsize > _MAX_NBYTES:
        return f"shape {list(shape)!r:.120} has more elements than numpy and torch can index"
    return None


def hex64(digest: int) -> str:
    """An xxh3-64 digest as 16 hex digits."""
    return f"{digest:016x}"


def file_digest(header: bytes, tensor_digests: Sequence[int]) -> str:
    """A file's xxh3-64 in manifest format 2: over its header, then its tensors' digests.

    ``header`` is the file's bytes before its data (length prefix included); ``tensor_digests``
    are the xxh3-64 of each tensor's bytes in data-offset order, each as 8 big-endian bytes. Every
    data byte is hashed once (per tensor), yet a change anywhere in the file changes this digest.
    (Format 1 hashed the whole file a second time.)
    """
    hasher = xxhash.xxh3_64(header)
    hasher.update(b"".join(d.to_bytes(8, "big") for d in tensor_digests))
    return hex64(hasher.intdigest())


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest's checksum covers: its JSON without "checksum", keys sorted."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def valid_run_id(value: Any) -> bool:
    """Whether ``value`` can be a run's id (``highmark.json``'s and a manifest's ``"run"``)."""
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


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


def validate_manifest(m: Any, rel: str) -> None:
    """Checks a parsed manifest: format, checksum, nesting, and every field before it is used.

    Raises:
        CorruptCheckpointError: naming ``rel``, for anything malformed, hostile or damaged.
        IncompatibleFormatError: when it was written in a newer format.
    """

    def bad(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(rel, message)

    if not isinstance(m, dict):
        raise bad("not a JSON object")
    version = m.get("format")
    if type(version) is not int or version < 1:
        raise bad(f"no valid format version (got {version!r:.40})")
    if version > FORMAT_VERSION:
        raise IncompatibleFormatError(
            f"{rel}: written in checkpoint format {version}; this highmark ({__version__}) reads "
            f"format {FORMAT_VERSION} and older: upgrade highmark"
        )
    for key, value in m.items():  # the skeleton is checked as it is walked, the files per field
        if key not in ("skeleton", "files") and json_depth(value, MAX_DEPTH) > MAX_DEPTH:
            raise bad(f"{key!r:.40} nests deeper than {MAX_DEPTH} levels (the limit)")
    checksum = m.get("checksum")
    try:
        body = canonical(m)
    except RecursionError:
        raise bad("the manifest nests too deeply to be checked") from None
    if not isinstance(checksum, str) or checksum != hex64(xxhash.xxh3_64_intdigest(body)):
        raise bad("manifest checksum mismatch (the manifest is damaged or was edited)")
    created = m.get("created")
    if not _is_int(m.get("step")) or not _finite(created):
        raise bad("missing or invalid step/created")
    if "run" in m and not valid_run_id(m["run"]):  # absent before run ids existed
        raise bad(f"invalid run id {m['run']!r:.80}")
    if not isinstance(m.get("metrics"), dict) or not isinstance(m.get("metadata"), dict):
        raise bad("missing or invalid metrics/metadata")
    try:
        kinds = tensor_kinds(m.get("skeleton"))
    except (ValueError, RecursionError) as exc:
        raise bad(f"invalid skeleton: {str(exc)[:200]}") from None
    files = m.get("files")
    if not isinstance(files, list):
        raise bad("missing file list")
    seen_files: set[str] = set()
    seen: set[str] = set()
    for f in files:
        _validate_file(f, kinds, seen_files, seen, bad)
    missing = set(kinds) - seen
    if missing:
        raise bad(f"tensors in the skeleton but in no file: {sorted(missing)[:5]}")


def _finite(value: Any) -> bool:
    """Whether ``value`` is an int or float that is a finite float."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _validate_file(
    f: Any, kinds: Mapping[str, str], seen_files: set[str], seen: set[str], bad: Any
) -> None:
    """Checks one file entry of a manifest and its tensors (``seen*``: names met so far)."""
    if not isinstance(f, dict) or not _plain_name(f.get("name")):
        name = f.get("name") if isinstance(f, dict) else f
        shown = name if isinstance(name, (str, int, float, type(None))) else type(name).__name__
        raise bad(f"file entry with an unsafe or invalid name: {shown!r:.120}")
    name = f["name"]
    if name.lower() in seen_files:
        raise bad(f"file {name!r} listed twice")
    seen_files.add(name.lower())
    ok = _is_int(f.get("size")) and _is_int(f.get("data_start"), 8)
    if not ok or f["data_start"] > MAX_HEADER + 8 or not _is_hex16(f.get("xxh3")):
        raise bad(f"file {name!r}: missing or invalid size/data_start/xxh3/tensors")
    if not isinstance(f.get("tensors"), list):
        raise bad(f"file {name!r}: missing or invalid size/data_start/xxh3/tensors")
    end = 0
    for t in f["tensors"]:
        tname = t.get("name") if isinstance(t, dict) else None
        if not isinstance(tname, str) or tname in seen or tname not in kinds:
            shown = tname if isinstance(tname, str) else type(tname).__name__
            raise bad(f"file {name!r}: tensor {shown!r:.120} is duplicated or not in the skeleton")
        seen.add(tname)
        _validate_tensor(t, kinds[tname], f"file {name!r}, tensor {tname!r}", bad)
        if t["data_offsets"][0] != end:
            raise bad(f"file {name!r}, tensor {tname!r}: data offsets are not contiguous")
        end = t["data_offsets"][1]
    if f["data_start"] + end != f["size"]:
        raise bad(f"file {name!r}: size {f['size']} does not match its tensors")


def _is_hex16(value: Any) -> bool:
    return isinstance(value, str) and _HEX16.fullmatch(value) is not None


def _numpy_dtype(name: str) -> bool:
    """Whether numpy itself has this dtype (not one registered by ml_dtypes, kind "V")."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        return False
    return bool(dtype.name == name and dtype.kind in "biufc")


def _validate_tensor(t: dict[str, Any], kind: str, where: str, bad: Any) -> None:
    dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if t.get("kind") != kind or not isinstance(dtype, str) or dtype not in DTYPES:
        raise bad(f"{where}: invalid kind/dtype/xxh3")
    if not _is_hex16(t.get("xxh3")):
        raise bad(f"{where}: invalid kind/dtype/xxh3")
    if not isinstance(shape, list) or not all(_is_int(n) for n in shape):
        raise bad(f"{where}: invalid shape (not a list of ints >= 0)")
    problem = shape_problem(shape, DTYPES[dtype].itemsize)
    if problem is not None:
        raise bad(f"{where}: invalid shape: {problem}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise bad(f"{where}: invalid data offsets")
    if kind == "numpy" and not _numpy_dtype(dtype):
        raise bad(f"{where}: dtype {dtype} cannot be a numpy array")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPES[dtype].itemsize:
        raise bad(f"{where}: byte length does not match dtype and shape")


@dataclass
class Header:
    data_start: int
    entries: dict[str, tuple[str, list[int], int, int]]  # name -> (st dtype, shape, begin, end)


def _read_exact(f: BinaryIO, n: int, rel: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptCheckpointError(rel, "file is truncated")
    return data


def read_header(f: BinaryIO, file_size: int, rel: str) -> Header:
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
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_is_int, shape)):
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
    return Header(8 + n, entries)


def check_header(header: Header, file: Mapping[str, Any], rel: str) -> None:
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
