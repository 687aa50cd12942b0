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
and every tensor read is checked against its checksum; :mod:`highmark.store.restore` reads the
tensors back (:func:`~highmark.store.restore.read_checkpoint`), this module reads and verifies
the manifest and the files. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
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
    UnsupportedStateError,
)
from highmark.state.skeleton import MAX_DEPTH
from highmark.state.tree import FlatTree
from highmark.store.checks import (
    FORMAT_VERSION,
    MAX_JSON,
    canonical,
    check_header,
    document_problem,
    file_digest,
    hex64,
    json_depth,
    load_json,
    read_header,
    valid_run_id,
    validate_manifest,
)
from highmark.store.layout import SMALL_TENSOR, FilePlan, plan_files
from highmark.store.restore import checkpoint_path, open_checked, read_head
from highmark.store.storage import COMMIT_MARKER, Storage

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "estimate_size",
    "read_manifest",
    "verify_checkpoint",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_COPY_BLOCK = (1 << 20, 16 << 20)  # bounds of a block copied from a non-contiguous/device tensor
_HASH_BLOCK = 16 << 20  # read size when checksumming a whole file
_SMALL_BATCH = 1 << 20  # small tensors are written together up to this many bytes at a time


# --------------------------------------------------------------------------- manifest encoding


def _encode_manifest(manifest: dict[str, Any]) -> bytes:
    manifest["checksum"] = hex64(xxhash.xxh3_64_intdigest(canonical(manifest)))
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items())
    return f"{{\n{lines}\n}}\n".encode("ascii")  # one top-level field per line


def _check_json(name: str, value: Any) -> None:
    if json_depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise ConfigError(f"{name} nests deeper than {MAX_DEPTH} levels (the limit)")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be JSON-serialisable: {exc}") from None


def _check_manifest(data: bytes, step: int) -> None:
    """Refuses a manifest a reader would refuse (too large, or too costly to parse)."""
    problem = document_problem(data)
    if problem is not None:
        raise UnsupportedStateError(
            "",
            f"the manifest of step {step} would be refused when read ({problem}): the state "
            "holds too much as JSON; store large lists of numbers as tensors",
        )


def estimate_size(flat: FlatTree) -> int:
    """The bytes :func:`write_checkpoint` will write for ``flat`` (a close upper bound).

    Raises:
        UnsupportedStateError: when the manifest would surely be larger than a reader reads
            (its skeleton and tensor names alone are over ``checks.MAX_JSON`` bytes).
    """
    # No file planning (it builds every header): the data bytes plus generous per-tensor and
    # per-file allowances for headers, alignment padding and the manifest.
    data = sum(int(leaf.nbytes) for leaf in flat.tensors.values())
    skeleton = len(json.dumps(flat.skeleton, check_circular=False))  # flatten made it: no cycles
    names = sum(len(name) for name in flat.tensors)
    if skeleton + names > MAX_JSON:  # both are in the manifest
        raise UnsupportedStateError(
            "",
            f"the manifest would be over {skeleton + names} bytes, more than the limit of "
            f"{MAX_JSON} a reader reads: the state's key paths or JSON values are too large; "
            "store large lists of numbers as tensors",
        )
    per_tensor = sum(3 * len(name) + 400 for name in flat.tensors)
    files = len({name.partition(".")[0] for name in flat.tensors}) + 1
    return data + skeleton + per_tensor + 200 * files + 4096


def _checked_step(step: Any, metrics: Any, metadata: Any, run: str | None) -> int:
    """The step as an int, once every argument of :func:`write_checkpoint` is checked.

    Raises:
        ConfigError: as :func:`write_checkpoint`.
    """
    try:
        step = operator.index(step)
    except TypeError:
        raise ConfigError(f"step must be an int, got {type(step).__name__}") from None
    if step < 0:
        raise ConfigError(f"step must be >= 0, got {step}")
    _check_json("metrics", metrics)
    _check_json("metadata", metadata)
    if run is not None and not valid_run_id(run):
        raise ConfigError(f"run must be a run id (1-64 of [0-9A-Za-z_-]), got {run!r:.80}")
    return int(step)


def write_checkpoint(
    storage: Storage,
    ckpt_dir: str,
    flat: FlatTree,
    *,
    step: int,
    metrics: dict[str, Any],
    metadata: dict[str, Any],
    created: float,
    run: str | None = None,
) -> dict[str, Any]:
    """Write the tensor files of ``flat`` and then ``manifest.json`` into ``ckpt_dir``.

    Streams each tensor from its live memory (no copy of the state), hashing as it writes. Does not
    commit: the caller commits the directory. Returns the manifest, which records ``step`` and
    the id of the ``run`` writing it (when given: :mod:`highmark.store.identity`).

    Raises:
        ConfigError: when step is not a non-negative int, metrics or metadata are not
            JSON-serialisable or nest deeper than ``MAX_DEPTH``, or run is not a run id
            (checked before anything is written).
        UnsupportedStateError: when a leaf cannot be stored, a file's header or the manifest
            would be over a reader's limits (``highmark.store.checks``).
        CheckpointError: when a tensor changed size while it was being written.
    """
    step = _checked_step(step, metrics, metadata, run)
    plans = plan_files(flat)
    total = sum(e.nbytes for p in plans for e in p.entries)
    block = min(max(total // 16, _COPY_BLOCK[0]), _COPY_BLOCK[1])
    files = [
        _write_file(storage, checkpoint_path(ckpt_dir, plan.name), plan, block) for plan in plans
    ]
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "highmark": __version__,
        "step": int(step),
        **({"run": run} if run is not None else {}),
        "created": float(created),
        "metrics": metrics,
        "metadata": metadata,
        "skeleton": flat.skeleton,
        "files": files,
    }
    data = _encode_manifest(manifest)
    _check_manifest(data, step)
    storage.write_bytes(checkpoint_path(ckpt_dir, MANIFEST), data)
    return manifest


def _write_file(storage: Storage, rel: str, plan: FilePlan, block: int) -> dict[str, Any]:
    """Writes one planned safetensors file, hashing each tensor as it streams; returns its
    manifest entry (size, data start, the file's digest and every tensor's).

    Raises:
        CheckpointError: when a tensor changed size while it was being written.
    """
    tensors = []
    digests = []
    with storage.open_write(rel) as f:
        f.write(plan.header)
        small: list[memoryview] = []  # consecutive small tensors, written with one call
        small_bytes = 0
        for e in plan.entries:
            hasher = xxhash.xxh3_64()
            written = 0
            large = e.nbytes > SMALL_TENSOR
            for chunk in e.codec.chunks(e.leaf, block):
                if not large:
                    small.append(chunk)
                    small_bytes += len(chunk)
                if small and (large or small_bytes >= _SMALL_BATCH):
                    f.write(b"".join(small))  # at most _SMALL_BATCH + SMALL_TENSOR bytes
                    small, small_bytes = [], 0
                if large:
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
        if small:
            f.write(b"".join(small))
    return {
        "name": plan.name,
        "size": plan.size,
        "data_start": len(plan.header),
        "xxh3": file_digest(plan.header, digests),
        "tensors": tensors,
    }


def read_manifest(storage: Storage, ckpt_dir: str) -> dict[str, Any]:
    """Read and validate the manifest of a checkpoint.

    Raises:
        CorruptCheckpointError: naming the manifest, when it is missing, oversized, not JSON, fails
            its checksum or is malformed (including file names that are not plain names).
        IncompatibleFormatError: when it was written in a newer format (names both versions).
    """
    rel = checkpoint_path(ckpt_dir, MANIFEST)
    try:
        size = storage.size(rel)
        if size > MAX_JSON:
            raise CorruptCheckpointError(
                rel, f"manifest of {size} bytes is implausibly large (the limit is {MAX_JSON})"
            )
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        raise CorruptCheckpointError(rel, "manifest.json is missing") from None
    manifest = load_json(data, rel)  # size and parsing cost checked first
    validate_manifest(manifest, rel)
    return dict(manifest)


def _problem(exc: CorruptCheckpointError) -> str:
    text = str(exc)
    return text[len(exc.path) + 2 :] if text.startswith(f"{exc.path}: ") else text


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
    hashed once); in format 1 the whole file's. Any other file in the directory (one the manifest
    does not name) is a problem too. Never raises for damage (an empty list means intact).
    """
    if manifest is None:
        try:
            manifest = read_manifest(storage, ckpt_dir)
        except CorruptCheckpointError as exc:
            return [(checkpoint_path(ckpt_dir, MANIFEST), _problem(exc))]
        except (IncompatibleFormatError, OSError) as exc:
            return [(checkpoint_path(ckpt_dir, MANIFEST), str(exc))]
    problems: list[tuple[str, str]] = []
    for file in manifest["files"]:
        rel = checkpoint_path(ckpt_dir, file["name"])
        try:
            problem = _verify_file(storage, rel, file, manifest["format"])
        except CorruptCheckpointError as exc:
            problem = _problem(exc)
        except OSError as exc:
            problem = f"unreadable: {exc}"
        if problem:
            problems.append((rel, problem))
    return problems + _unexpected(storage, ckpt_dir, manifest)


def _unexpected(
    storage: Storage, ckpt_dir: str, manifest: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """Every entry of the checkpoint directory that the manifest does not name."""
    expected = {MANIFEST, *(file["name"] for file in manifest["files"])}
    if not storage.is_local:
        expected.add(COMMIT_MARKER)
    why = "unexpected file: the manifest does not name it (highmark did not write it here)"
    return [(f"{ckpt_dir}/{n}", why) for n in storage.listdir(ckpt_dir) if n not in expected]


def _verify_file(storage: Storage, rel: str, file: Mapping[str, Any], version: int) -> str | None:
    size = int(file["size"])
    with open_checked(storage, rel, file) as f:  # missing or resized: raises, named by the caller
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
            digest = file_digest(read_head(f, header.data_start, rel), digests)
    if digest != file["xxh3"]:
        return f"checksum mismatch (xxh3 {digest}, the manifest says {file['xxh3']})"
    return None
