"""Reading a checkpoint's tensors back: only the bytes asked for, checked, into place or new.

:func:`read_checkpoint` plans the reads of the wanted tensors file by file (after checking each
file's size and header against the manifest), then performs them with
:func:`highmark.store.readjobs.read_all`: in parallel on local disk, each tensor hashed as it is
read. Nothing is ever unpickled.

- New tensors own their memory: the bytes are read into fresh host tensors, so nothing done to
  the files afterwards (edited in place, truncated, deleted) reaches them. ``zero_copy=True``
  makes them copy-on-write views of the memory-mapped file instead (local disk only; opt-in,
  since a file edited in place shows through and a truncated one kills the process with SIGBUS).
- ``into=`` tensors (live ones) receive bytes only once every byte of the restore has been
  checked. On local disk the bytes meant for them are first read into a small scratch buffer
  per thread and checked, then read into them (two reads of the page cache, no extra memory);
  elsewhere (object stores) they are read into host tensors, checked, then copied over (one
  read over the network, the restored bytes held twice meanwhile). A non-contiguous or device
  ``into`` tensor always takes the host-tensor route.
"""

from __future__ import annotations

import contextlib
import io
import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import xxhash

from highmark.errors import ConfigError, CorruptCheckpointError, add_note
from highmark.state.leafcodecs import LeafCodec, codec_for_kind
from highmark.state.skeleton import select, tensor_kinds
from highmark.state.tree import tensor_leaves, unflatten
from highmark.store.checks import MAX_HEADER, check_header, file_digest, read_header
from highmark.store.readjobs import ReadJob, read_all
from highmark.store.storage import Storage

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
    zero_copy: bool = False,
) -> Any:
    """Read a checkpoint's tree, or the part of it under ``keys``, reading only those bytes.

    ``into`` is an existing tree (the restored one, or, when ``keys`` names one key path, the
    subtree at that path, e.g. ``model.state_dict()`` for ``keys=["model"]``) whose tensors are
    filled in place. With ``verify`` (the default) every byte read is checked against its
    tensor's xxh3-64, and no byte reaches an ``into`` tensor before every byte of the restore
    has passed: a damaged checkpoint raises and leaves ``into`` as it was. Tensors not in
    ``into`` come back as new host tensors that own their memory, or, with ``zero_copy`` on
    local disk, as copy-on-write views of the memory-mapped files (see the module docstring).

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
    plan = _Plan(verify, zero_copy)
    with contextlib.ExitStack() as files:  # open until every planned read is done
        for file in manifest["files"]:
            wanted = [t for t in file["tensors"] if t["name"] in kinds]
            if wanted:
                rel = checkpoint_path(ckpt_dir, file["name"])
                f = files.enter_context(open_checked(storage, rel, file))
                start = _data_start(f, rel, file, manifest["format"] if verify else 1)
                _plan_reads(f, rel, start, wanted, targets, plan)
        # Every `into` tensor matched the checkpoint's: now the reads.
        plan.perform()
    return unflatten(skeleton, plan.out)


@dataclass
class _Plan:
    """The reads of one restore, in file order, and the tensors they make or fill."""

    verify: bool
    zero_copy: bool
    out: dict[str, Any] = field(default_factory=dict)  #: key path -> tensor returned
    first: list[ReadJob] = field(default_factory=list)  #: new tensors, staged, checks
    live: list[ReadJob] = field(default_factory=list)  #: into live tensors, after the checks
    staged: list[tuple[Any, LeafCodec, Any]] = field(default_factory=list)  #: dest, codec, host

    def perform(self) -> None:
        """Reads and checks every byte (the live tensors' bytes into scratch), and only then
        reads into the live tensors and copies the staged ones over."""
        read_all(self.first)
        try:  # every byte is checked: only now does any reach a live tensor
            read_all(self.live)
            for dest, codec, leaf in self.staged:
                codec.assign(dest, leaf)
        except BaseException as err:
            add_note(err, "highmark: the `into` tensors may be partly overwritten by this restore")
            raise


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
    plan: _Plan,
) -> None:
    """Plans the reads of the file's wanted tensors: into ``into``'s tensors (``targets``), into
    new host tensors (each its own memory), or (``plan.zero_copy``) as views of the mapped file,
    checked at once.
    """
    mapped: memoryview | None = None
    can_map = plan.zero_copy and isinstance(f, io.FileIO)
    for t in sorted(wanted, key=lambda t: int(t["data_offsets"][0])):
        name = t["name"]
        start = data_start + t["data_offsets"][0]
        target = targets.get(name)
        if target is not None:  # into `into`'s memory: the common case of a resume
            _plan_into(f, rel, start, t, target, plan)
            continue
        codec = codec_for_kind(t["kind"])
        dtype, shape, nbytes = t["dtype"], tuple(t["shape"]), _nbytes(t)
        if mapped is None and can_map and nbytes:
            try:
                mapped = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
            except (OSError, ValueError):  # a filesystem without mmap: read instead
                can_map = False
        if mapped is not None and nbytes:
            # zero_copy: a copy-on-write view of the mapped file (only the pages of the
            # tensors read are touched; writes to it never reach the file), checked now.
            window = mapped[start : start + nbytes]
            _check_tensor(window, t, rel, plan.verify)
            plan.out[name] = codec.from_buffer(window, dtype, shape)
            continue
        leaf = plan.out[name] = codec.empty(dtype, shape)  # owned memory
        view = codec.writable_bytes(leaf)
        assert view is not None
        plan.first.append(ReadJob(f, rel, start, view, name, t["xxh3"] if plan.verify else None))


def _plan_into(
    f: BinaryIO,
    rel: str,
    start: int,
    t: Mapping[str, Any],
    target: tuple[Any, LeafCodec],
    plan: _Plan,
) -> None:
    """Plans the read of tensor ``t`` into the ``into`` tensor ``target``.

    From a local file into a contiguous host tensor: its bytes are checked first (read into
    scratch) and read into it after every check. Any other (a non-contiguous or device tensor,
    a file on an object store) is staged: read into a host tensor, checked, then assigned.

    Raises:
        ConfigError: naming the key path, when ``target``'s dtype or shape differ from ``t``'s.
    """
    name = t["name"]
    dest, codec = target
    have_dtype, have_shape, direct = codec.describe_target(dest, name)
    if have_dtype != t["dtype"] or list(have_shape) != t["shape"]:
        raise ConfigError(
            f"{name}: the checkpoint holds {t['dtype']}{list(t['shape'])}, "
            f"`into` has {have_dtype}{list(have_shape)}"
        )
    plan.out[name] = dest
    xxh3 = t["xxh3"] if plan.verify else None
    if direct is not None and isinstance(f, io.FileIO):
        if xxh3 is not None:
            plan.first.append(ReadJob(f, rel, start, direct, name, xxh3, check_only=True))
        plan.live.append(ReadJob(f, rel, start, direct, name, None))
        return
    leaf = codec.empty(have_dtype, have_shape)
    plan.staged.append((dest, codec, leaf))
    view = codec.writable_bytes(leaf)
    assert view is not None
    plan.first.append(ReadJob(f, rel, start, view, name, xxh3))


def _check_tensor(view: memoryview, t: Mapping[str, Any], rel: str, verify: bool) -> None:
    if verify and xxhash.xxh3_64_hexdigest(view) != t["xxh3"]:
        raise CorruptCheckpointError(rel, f"checksum mismatch in tensor {t['name']!r}")


def read_head(f: BinaryIO, n: int, rel: str) -> bytes:
    """The first ``n`` bytes of ``f``; CorruptCheckpointError naming ``rel`` when shorter."""
    data = bytearray(n)
    _readinto(f, 0, memoryview(data), rel)
    return bytes(data)
