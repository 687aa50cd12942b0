"""Reading a checkpoint's tensors back: only the bytes asked for, checked, into place or mapped.

:func:`read_checkpoint` plans the reads of the wanted tensors file by file (after checking each
file's size and header against the manifest), then performs them with
:func:`highmark.store.reader.read_all`: in parallel on local disk, each tensor hashed as it is
read. On local disk new tensors are copy-on-write views of the memory-mapped file (no copy;
only the pages of the tensors asked for are read; writing to them never reaches the file);
``into=`` reads straight into the existing tensors' memory. Elsewhere the byte ranges are read
with seek + readinto. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import io
import mmap
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, cast

import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError
from highmark.store.backend import Storage
from highmark.store.checks import MAX_HEADER, check_header, file_digest, read_header
from highmark.store.reader import ReadJob, read_all
from highmark.tree import (
    LeafCodec,
    codec_for_kind,
    select,
    tensor_kinds,
    tensor_leaves,
    unflatten,
)

__all__ = ["checkpoint_path", "open_checked", "open_for_read", "read_checkpoint", "read_head"]


def checkpoint_path(ckpt_dir: str, name: str) -> str:
    """The run-relative path of ``name`` inside the checkpoint directory ``ckpt_dir``."""
    return f"{ckpt_dir}/{name}" if ckpt_dir else name


# --------------------------------------------------------------------------- reading


def _readinto(f: BinaryIO, start: int, view: memoryview, rel: str) -> None:
    f.seek(start)
    while len(view):
        n = cast(Any, f).readinto(view)
        if not n:
            raise CorruptCheckpointError(rel, "file is truncated")
        view = view[n:]


def open_for_read(storage: Storage, rel: str) -> BinaryIO:
    """A local file unbuffered (reads go straight into tensors), or the storage's reader."""
    path = storage.local_path(rel) if storage.is_local else None
    if path is not None:
        return open(path, "rb", buffering=0)  # raw reads, straight into tensors
    return storage.open_read(rel)


def _targets(into: Any, keys: Sequence[str] | None) -> dict[str, tuple[Any, LeafCodec]]:
    """The tensors of ``into`` by key path in the restored tree, with their codecs."""
    if into is None:
        return {}
    # Each target is described when it is read into.
    codecs: dict[str, LeafCodec] = {}
    found = {}
    for path, (leaf, kind) in tensor_leaves(into).items():
        codec = codecs.get(kind)
        if codec is None:
            codec = codecs[kind] = codec_for_kind(kind)
        found[path] = (leaf, codec)
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
    staged: list[_Staged] = []
    with contextlib.ExitStack() as files:  # open until every planned read is done
        for file in manifest["files"]:
            wanted = [t for t in file["tensors"] if t["name"] in kinds]
            if wanted:
                rel = checkpoint_path(ckpt_dir, file["name"])
                f = files.enter_context(open_checked(storage, rel, file))
                start = _data_start(f, rel, file, manifest["format"] if verify else 1)
                _plan_reads(f, rel, start, wanted, targets, verify, out, jobs, staged)
        # Every `into` tensor matched the checkpoint's: only now do bytes reach them.
        read_all(jobs + [job for job, *_ in staged])
        for _, dest, codec, leaf in staged:  # checked: assign them
            codec.assign(dest, leaf)
    return unflatten(skeleton, out)


#: A read into a host tensor that is then assigned to an ``into`` tensor (non-contiguous or
#: on a device): the job, the destination, its codec and the host tensor.
_Staged = tuple[ReadJob, Any, LeafCodec, Any]


def _nbytes(t: Mapping[str, Any]) -> int:
    return int(t["data_offsets"][1]) - int(t["data_offsets"][0])


def open_checked(storage: Storage, rel: str, file: Mapping[str, Any]) -> BinaryIO:
    """Opens one of a checkpoint's files after checking that its size is the manifest's.

    Raises:
        CorruptCheckpointError: naming ``rel``, when the file is missing or its size differs.
    """
    try:
        size = storage.size(rel)
    except FileNotFoundError:
        raise CorruptCheckpointError(rel, "file is missing") from None
    if size != file["size"]:
        raise CorruptCheckpointError(rel, f"size is {size} bytes, the manifest says {file['size']}")
    return open_for_read(storage, rel)


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
                head = read_head(f, n, rel)
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
    wanted: list[dict[str, Any]],
    targets: Mapping[str, tuple[Any, LeafCodec]],
    verify: bool,
    out: dict[str, Any],
    jobs: list[ReadJob],
    staged: list[_Staged],
) -> None:
    """Fills ``out`` with the file's wanted tensors: mapped ones at once, read ones as ``jobs``.

    A tensor read into ``into``'s memory, or into a new tensor, becomes a :class:`ReadJob`
    (read and checked afterwards, in parallel, by :func:`read_all`); one that must be assigned
    (``into`` holds a non-contiguous or device tensor) is ``staged``: read into a host tensor
    and checked once every ``into`` tensor has been checked, before it reaches ``into``.
    """
    mapped: memoryview | None = None
    can_map = isinstance(f, io.FileIO)
    for t in sorted(wanted, key=lambda t: int(t["data_offsets"][0])):
        name = t["name"]
        start = data_start + t["data_offsets"][0]
        target = targets.get(name)
        if target is not None:  # into `into`'s memory: the common case of a resume
            dest, codec = target
            have_dtype, have_shape, direct = codec.describe_target(dest, name)
            if have_dtype != t["dtype"] or list(have_shape) != t["shape"]:
                raise ConfigError(
                    f"{name}: the checkpoint holds {t['dtype']}{list(t['shape'])}, "
                    f"`into` has {have_dtype}{list(have_shape)}"
                )
            out[name] = dest
            if direct is not None:
                jobs.append(ReadJob(f, rel, start, direct, name, t["xxh3"] if verify else None))
                continue
            # A non-contiguous or device tensor: read into a host tensor, assigned later.
            leaf = codec.empty(have_dtype, have_shape)
            view = codec.writable_bytes(leaf)
            assert view is not None
            job = ReadJob(f, rel, start, view, name, t["xxh3"] if verify else None)
            staged.append((job, dest, codec, leaf))
            continue
        dtype, shape, nbytes = t["dtype"], tuple(t["shape"]), _nbytes(t)
        codec = codec_for_kind(t["kind"])
        if mapped is None and can_map and nbytes:
            try:
                mapped = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
            except (OSError, ValueError):  # a filesystem without mmap: read instead
                can_map = False
        if mapped is not None and nbytes:
            # Local file, new tensor: a copy-on-write view of the mapped file (zero copy;
            # only the pages of the tensors read are touched).
            window = mapped[start : start + nbytes]
            _check_tensor(window, t, rel, verify)
            out[name] = codec.from_buffer(window, dtype, shape)
            continue
        leaf = codec.empty(dtype, shape)
        view = codec.writable_bytes(leaf)
        assert view is not None
        out[name] = leaf
        jobs.append(ReadJob(f, rel, start, view, name, t["xxh3"] if verify else None))


def _check_tensor(view: memoryview, t: Mapping[str, Any], rel: str, verify: bool) -> None:
    if verify and xxhash.xxh3_64_hexdigest(view) != t["xxh3"]:
        raise CorruptCheckpointError(rel, f"checksum mismatch in tensor {t['name']!r}")


def read_head(f: BinaryIO, n: int, rel: str) -> bytes:
    """The first ``n`` bytes of ``f``; CorruptCheckpointError naming ``rel`` when shorter."""
    data = bytearray(n)
    _readinto(f, 0, memoryview(data), rel)
    return bytes(data)
