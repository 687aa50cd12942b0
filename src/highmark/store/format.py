"""The on-disk format of one checkpoint: plain safetensors files plus a JSON manifest.

A checkpoint directory holds one safetensors file per top-level key of the state
(``model.safetensors``, ``optimizer.safetensors``; tensors sitting directly at the root go to
``state.safetensors``), whose tensor names are the full key paths, so
``safetensors.torch.load_file`` reads them without highmark. ``manifest.json`` holds the tree's
skeleton and JSON leaves, step, metrics, metadata, and per file its size, data start and xxh3-64
checksum, and per tensor its true dtype, shape, data offsets, xxh3-64 and kind (torch/numpy). The
manifest carries a checksum of itself. Since format 2 a file's checksum is derived from its header
and its tensors' checksums (:func:`~highmark.store.checks.file_digest`), so every byte is hashed
once; format 1 (a second hash over the whole file) is still read and verified.

Writing streams from the live tensors, tensor by tensor (a non-contiguous or device tensor is
copied in blocks of 1/16 of the state, between 1 and 16 MiB), hashing as it goes; the layout of
the files is :mod:`highmark.store.layout`'s.

Reading trusts nothing (:mod:`highmark.store.checks` validates headers and manifests before use),
and every tensor read is checked against its checksum. Nothing is ever unpickled. On local disk,
new tensors are copy-on-write views of the memory-mapped file (no copy; only the pages of the
tensors asked for are read; writing to them never reaches the file); ``into=`` reads straight into
the existing tensors' memory. Elsewhere, the needed byte ranges are read with seek + readinto.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import mmap
import operator
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, cast

import xxhash

from highmark.__about__ import __version__
from highmark.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleFormatError,
)
from highmark.store.backend import Storage
from highmark.store.checks import (
    FORMAT_VERSION,
    MAX_HEADER,
    canonical,
    check_header,
    file_digest,
    hex64,
    read_header,
    validate_manifest,
)
from highmark.store.layout import plan_files
from highmark.store.reader import ReadJob, read_all
from highmark.tree import (
    FlatTree,
    LeafCodec,
    codec_for_kind,
    flatten,
    select,
    tensor_kinds,
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

MANIFEST = "manifest.json"
MAX_MANIFEST = 256 << 20
_COPY_BLOCK = (1 << 20, 16 << 20)  # bounds of a block copied from a non-contiguous/device tensor
_HASH_BLOCK = 16 << 20  # read size when checksumming a whole file


def _rel(ckpt_dir: str, name: str) -> str:
    return f"{ckpt_dir}/{name}" if ckpt_dir else name


# --------------------------------------------------------------------------- manifest encoding


def _encode_manifest(manifest: dict[str, Any]) -> bytes:
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items())
    return f"{{\n{lines}\n}}\n".encode("ascii")  # one top-level field per line


def _check_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be JSON-serialisable: {exc}") from None


def estimate_size(flat: FlatTree) -> int:
    """The bytes :func:`write_checkpoint` will write for ``flat`` (a close upper bound)."""
    # No file planning (it builds every header): the data bytes plus generous per-tensor and
    # per-file allowances for headers, alignment padding and the manifest.
    data = sum(int(leaf.nbytes) for leaf in flat.tensors.values())
    skeleton = len(json.dumps(flat.skeleton))
    per_tensor = sum(3 * len(name) + 400 for name in flat.tensors)
    files = len({name.partition(".")[0] for name in flat.tensors}) + 1
    return data + skeleton + per_tensor + 200 * files + 4096


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
        ConfigError: when step is not a non-negative int, or metrics or metadata are not
            JSON-serialisable (checked before anything is written).
        UnsupportedStateError: when a leaf cannot be stored.
        CheckpointError: when a tensor changed size while it was being written.
    """
    try:
        step = operator.index(step)
    except TypeError:
        raise ConfigError(f"step must be an int, got {type(step).__name__}") from None
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}")
    _check_json("metrics", metrics)
    _check_json("metadata", metadata)
    files = []
    plans = plan_files(flat)
    total = sum(e.nbytes for p in plans for e in p.entries)
    block = min(max(total // 16, _COPY_BLOCK[0]), _COPY_BLOCK[1])
    for plan in plans:
        rel = _rel(ckpt_dir, plan.name)
        tensors = []
        digests = []
        with storage.open_write(rel) as f:
            f.write(plan.header)
            for e in plan.entries:
                hasher = xxhash.xxh3_64()
                written = 0
                for chunk in e.codec.chunks(e.leaf, block):
                    f.write(chunk)
                    hasher.update(chunk)
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
                        "xxh3": hex64(hasher.intdigest()),
                    }
                )
                digests.append(hasher.intdigest())
        files.append(
            {
                "name": plan.name,
                "size": plan.size,
                "data_start": len(plan.header),
                "xxh3": file_digest(plan.header, digests),
                "tensors": tensors,
            }
        )
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "highmark": __version__,
        "step": int(step),
        "created": float(created),
        "metrics": metrics,
        "metadata": metadata,
        "skeleton": flat.skeleton,
        "files": files,
    }
    storage.write_bytes(_rel(ckpt_dir, MANIFEST), _encode_manifest(manifest))
    return manifest


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
    validate_manifest(manifest, rel)
    return dict(manifest)


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
    flat = flatten(into, describe=False)  # each target is described when it is read into
    kinds = flat.tensor_kinds()
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
    else:  # the validated manifest's files list exactly the skeleton's tensors
        kinds = {t["name"]: t["kind"] for f in manifest["files"] for t in f["tensors"]}
    targets = _targets(into, keys)
    extra = sorted(set(targets) - set(kinds))
    if extra:
        hint = "" if keys else " (to fill a subtree such as model.state_dict(), pass keys=[...])"
        raise ConfigError(f"`into` has tensors the checkpoint does not hold: {extra[:10]}{hint}")
    out: dict[str, Any] = {}
    jobs: list[ReadJob] = []
    with contextlib.ExitStack() as files:  # open until every planned read is done
        for file in manifest["files"]:
            wanted = [t for t in file["tensors"] if t["name"] in kinds]
            if wanted:
                rel = _rel(ckpt_dir, file["name"])
                f = files.enter_context(_open_checked(storage, rel, file))
                start = _data_start(f, rel, file, manifest["format"] if verify else 1)
                _plan_reads(f, rel, start, file, wanted, targets, verify, out, jobs)
        read_all(jobs)
    return unflatten(skeleton, out)


def _nbytes(t: Mapping[str, Any]) -> int:
    return int(t["data_offsets"][1]) - int(t["data_offsets"][0])


def _open_checked(storage: Storage, rel: str, file: Mapping[str, Any]) -> BinaryIO:
    """Opens one of a checkpoint's files after checking that its size is the manifest's."""
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        raise CorruptCheckpointError(rel, "file is missing") from None
    if size != file["size"]:
        raise CorruptCheckpointError(rel, f"size is {size} bytes, the manifest says {file['size']}")
    return _open(storage, rel)


def _data_start(f: BinaryIO, rel: str, file: Mapping[str, Any], version: int) -> int:
    """Checks that the file's header is the one the manifest describes; returns its data start.

    Since format 2 the header's bytes are checked, unparsed, against the file's checksum in the
    manifest (which covers the header and the tensors' checksums, both known here). Format 1 has
    no such checksum, and an unverified restore (``version`` 1 is passed) accepts any header
    that means the same: the header is parsed, validated and compared with the manifest.
    """
    if version >= 2:
        n = int(file["data_start"])
        tensors = sorted(file["tensors"], key=lambda t: int(t["data_offsets"][0]))
        end = int(tensors[-1]["data_offsets"][1]) if tensors else 0
        if 8 <= n <= MAX_HEADER + 8 and n + end == file["size"]:
            try:
                head = _read_all(f, n, rel)
            except CorruptCheckpointError:
                head = b""
            if file_digest(head, [int(t["xxh3"], 16) for t in tensors]) == file["xxh3"]:
                return n
    header = read_header(f, file["size"], rel)  # what is wrong with it, precisely
    check_header(header, file, rel)
    if version >= 2:
        raise CorruptCheckpointError(rel, "header does not match the manifest (it was changed)")
    return header.data_start


def _plan_reads(
    f: BinaryIO,
    rel: str,
    data_start: int,
    file: Mapping[str, Any],
    wanted: list[dict[str, Any]],
    targets: Mapping[str, tuple[Any, LeafCodec]],
    verify: bool,
    out: dict[str, Any],
    jobs: list[ReadJob],
) -> None:
    """Fills ``out`` with the file's wanted tensors: mapped ones at once, read ones as ``jobs``.

    A tensor read into ``into``'s memory, or into a new tensor, becomes a :class:`ReadJob`
    (read and checked afterwards, in parallel, by :func:`read_all`); one that must be assigned
    (``into`` holds a non-contiguous or device tensor) is read and checked here, before it
    reaches ``into``.
    """
    mapped: memoryview | None = None
    can_map = isinstance(f, io.FileIO)
    for t in sorted(wanted, key=lambda t: int(t["data_offsets"][0])):
        name, dtype, shape = t["name"], t["dtype"], tuple(t["shape"])
        start = data_start + t["data_offsets"][0]
        nbytes = _nbytes(t)
        target = targets.get(name)
        dest, codec = target if target is not None else (None, codec_for_kind(t["kind"]))
        if mapped is None and can_map and dest is None and nbytes:
            try:
                mapped = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
            except (OSError, ValueError):  # a filesystem without mmap: read instead
                can_map = False
        if mapped is not None and dest is None and nbytes:
            # Local file, new tensor: a copy-on-write view of the mapped file (zero copy;
            # only the pages of the tensors read are touched).
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
        out[name] = dest if dest is not None else leaf
        if dest is None or leaf is dest:
            jobs.append(ReadJob(f, rel, start, view, name, t["xxh3"] if verify else None))
            continue
        _readinto(f, start, view, rel)
        _check_tensor(view, t, rel, verify)  # before the bytes reach `dest`
        codec.assign(dest, leaf)


def _check_tensor(view: memoryview, t: Mapping[str, Any], rel: str, verify: bool) -> None:
    if verify and xxhash.xxh3_64_hexdigest(view) != t["xxh3"]:
        raise CorruptCheckpointError(rel, f"checksum mismatch in tensor {t['name']!r}")


def _problem(exc: CorruptCheckpointError) -> str:
    text = str(exc)
    return text[len(exc.path) + 2 :] if text.startswith(f"{exc.path}: ") else text


def _read_all(f: BinaryIO, n: int, rel: str) -> bytes:
    data = bytearray(n)
    _readinto(f, 0, memoryview(data), rel)
    return bytes(data)


def _file_hash(f: BinaryIO, size: int) -> str:
    """Format 1: the xxh3-64 of the whole file."""
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


def _tensor_digests(f: BinaryIO, data_start: int, ends: Sequence[int], rel: str) -> list[int]:
    """The xxh3-64 of each tensor (contiguous, ending at ``ends``), reading each byte once."""
    total = ends[-1] if ends else 0
    view = memoryview(bytearray(min(_HASH_BLOCK, max(total, 1))))
    hasher = xxhash.xxh3_64()
    digests: list[int] = []
    pos = 0
    while len(digests) < len(ends) and ends[len(digests)] == pos:  # leading empty tensors
        digests.append(hasher.intdigest())
    f.seek(data_start)
    while pos < total:
        n = cast(Any, f).readinto(view[: min(len(view), total - pos)])
        if not n:
            raise CorruptCheckpointError(rel, "file is truncated")
        chunk = view[:n]
        while len(chunk):
            take = min(len(chunk), ends[len(digests)] - pos)
            hasher.update(chunk[:take])
            chunk = chunk[take:]
            pos += take
            while len(digests) < len(ends) and ends[len(digests)] == pos:
                digests.append(hasher.intdigest())
                hasher.reset()
    return digests


def verify_checkpoint(
    storage: Storage, ckpt_dir: str, manifest: Mapping[str, Any] | None = None
) -> list[tuple[str, str]]:
    """Check a checkpoint's manifest and files; returns every ``(relpath, problem)`` found.

    Checks for each file: present, size, header valid and matching the manifest, and its xxh3-64:
    in format 2 each tensor's, then the file's derived from them and the header (each byte read and
    hashed once); in format 1 the whole file's. Never raises for damage (an empty list means
    intact).
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
            problem = _verify_file(storage, rel, file, manifest["format"])
        except CorruptCheckpointError as exc:
            problem = _problem(exc)
        except OSError as exc:
            problem = f"unreadable: {exc}"
        if problem:
            problems.append((rel, problem))
    return problems


def _verify_file(storage: Storage, rel: str, file: Mapping[str, Any], version: int) -> str | None:
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        return "file is missing"
    if size != file["size"]:
        return f"size is {size} bytes, the manifest says {file['size']}"
    with _open(storage, rel) as f:
        header = read_header(f, size, rel)
        check_header(header, file, rel)
        if version == 1:
            digest = _file_hash(f, size)
        else:
            tensors = sorted(file["tensors"], key=lambda t: int(t["data_offsets"][0]))
            ends = [int(t["data_offsets"][1]) for t in tensors]
            digests = _tensor_digests(f, header.data_start, ends, rel)
            for t, d in zip(tensors, digests, strict=True):
                if hex64(d) != t["xxh3"]:
                    return f"checksum mismatch in tensor {t['name']!r}"
            digest = file_digest(_read_all(f, header.data_start, rel), digests)
    if digest != file["xxh3"]:
        return f"checksum mismatch (xxh3 {digest}, the manifest says {file['xxh3']})"
    return None
