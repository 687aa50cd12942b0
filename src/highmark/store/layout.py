"""How a flat tree is laid out in safetensors files: grouping, safe file names, headers.

One file per top-level container of the state (``model.safetensors``, ``optimizer.safetensors``),
tensors sitting directly at the root in ``state.safetensors``. File names are derived from the keys
with anything but ``[A-Za-z0-9_.-]`` replaced, no leading dot, unique case-insensitively. Within a
file, tensors are ordered by decreasing item size, so that each starts at an offset aligned to its
item size, and within one item size the small ones (:data:`SMALL_TENSOR`) first, so that a save
writes them with one call (stable in tree order otherwise); the JSON header is padded with
spaces to a multiple of 8.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from highmark.errors import UnsupportedStateError
from highmark.state.dtypes import DTYPES, DType
from highmark.state.leafcodecs import LeafCodec, codec_for_kind
from highmark.state.skeleton import tensor_kinds, top_level_keys
from highmark.state.tree import FlatTree
from highmark.store.checks import MAX_HEADER, shape_problem

__all__ = ["ROOT_FILE", "Entry", "FilePlan", "plan_files"]

ROOT_FILE = "state"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


#: Tensors of at most this many bytes are laid out before the others of their item size and
#: written together: every system call of a background save lets go of the GIL and may wait up
#: to the interpreter's switch interval to get it back while the training thread runs Python.
SMALL_TENSOR = 64 << 10


@dataclass
class Entry:
    """One tensor of a file: where it comes from and where its bytes go."""

    name: str
    kind: str
    codec: LeafCodec
    leaf: Any
    dtype: DType
    shape: tuple[int, ...]
    nbytes: int
    begin: int = 0


@dataclass
class FilePlan:
    """One safetensors file to write: its name, its tensors in data order and its header."""

    name: str
    entries: list[Entry]
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
        paths = list(tensor_kinds(node, prefix=str(key)))
        if paths:
            groups.append((key, paths))
    return groups


def plan_files(flat: FlatTree) -> list[FilePlan]:
    """The files a flat tree is written to, with their tensors in data order and their headers.

    Raises:
        UnsupportedStateError: when a leaf cannot be stored (its dtype, or a shape over
            :data:`~highmark.store.checks.MAX_DIMS` dimensions), or a file's header would be over
            :data:`~highmark.store.checks.MAX_HEADER` bytes: what a reader would refuse.
    """
    plans: list[FilePlan] = []
    used: set[str] = set()
    for key, paths in _groups(flat):
        entries = []
        for path in paths:
            leaf = flat.tensors[path]
            kind = type(leaf).__module__.partition(".")[0]
            codec = codec_for_kind(kind)
            dtype_name, shape = codec.describe(leaf, path)
            dtype = DTYPES[dtype_name]
            problem = shape_problem(shape, dtype.itemsize)
            if problem is not None:
                raise UnsupportedStateError(path, f"a tensor of {problem} cannot be read back")
            entries.append(
                Entry(
                    path, codec.kind, codec, leaf, dtype, shape, math.prod(shape) * dtype.itemsize
                )
            )
        # By item size, so that every tensor is aligned to it; within one, the small tensors
        # first, so that a save writes them with one call (stable: tree order otherwise).
        entries.sort(key=lambda e: (-e.dtype.itemsize, e.nbytes > SMALL_TENSOR))
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
        if len(text) > MAX_HEADER:  # what a reader (and safetensors) refuses
            raise UnsupportedStateError(
                "" if key is None else str(key),
                f"the safetensors header of its file would be {len(text)} bytes, over the limit "
                f"of {MAX_HEADER} (the tensors' key paths are too long or too many)",
            )
        plans.append(
            FilePlan(
                f"{_file_stem(stem, used)}.safetensors",
                entries,
                len(text).to_bytes(8, "little") + text,
            )
        )
    return plans
