"""State trees: a nested state <-> a flat ``{key.path: tensor}`` map plus a JSON skeleton.

A *state* is a tree of ``dict`` (also ``OrderedDict``) / ``list`` / ``tuple`` whose leaves are
tensors (torch tensors, numpy arrays and numpy scalars) or JSON scalars (``int``, ``float``
including nan/inf, ``bool``, ``str``, ``None``). :func:`flatten` splits it into the tensors, keyed
by *key path* (keys joined with ``"."``: ``model.layer1.weight``, ``optimizer.state.3.exp_avg``),
and a JSON-serialisable *skeleton*; :func:`unflatten` puts them back together with the same types:
int dict keys stay int, tuples stay tuples, torch comes back torch and numpy numpy.

Skeleton nodes (plain JSON):

- a JSON scalar is its own node (``3``, ``0.5``, ``NaN``, ``"adam"``, ``null``);
- ``{"dict": [[key, node], ...]}`` and ``{"odict": [...]}`` (keys are str or int, in order);
- ``{"list": [node, ...]}`` and ``{"tuple": [node, ...]}``;
- ``{"tensor": kind}`` for a tensor leaf, ``kind`` being ``"torch"`` or ``"numpy"``; a numpy
  scalar adds ``"scalar": true``. The tensor's name is its key path.

Every node of a tree must have its own key path: ``{"a.b": x, "a": {"b": y}}`` is refused, since
``a.b`` would name two things. A tree nests at most :data:`MAX_DEPTH` containers deep (the root
container is level 1): :func:`flatten` refuses a deeper state, and a skeleton read back that nests
deeper is malformed, so no save produces what a restore would refuse.

Tensors are handled by the *leaf codecs* of :mod:`highmark.codecs`, keyed by the leaf's
top-level module (numpy built in, torch imported lazily by name), so this module (and the store
built on it) never imports torch itself. The codec names (:class:`LeafCodec`, :data:`DTYPES`,
:func:`codec_for_kind`, ...) are re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from highmark.codecs import DTYPES, DType, LeafCodec, NumpyCodec, codec_for_kind, has_codec
from highmark.errors import ConfigError, UnsupportedStateError

__all__ = [
    "DTYPES",
    "MAX_DEPTH",
    "DType",
    "FlatTree",
    "LeafCodec",
    "NumpyCodec",
    "codec_for_kind",
    "flatten",
    "select",
    "tensor_kinds",
    "tensor_leaves",
    "top_level_keys",
    "unflatten",
]

#: How many dict/list/tuple levels a state may nest (the root container is level 1); one limit
#: for saving and reading, far below what Python's recursion limit allows.
MAX_DEPTH = 100

_JSON_SCALARS = (int, float, bool, str, type(None))
_CONTAINERS = ("dict", "odict", "list", "tuple")
_NUMPY = codec_for_kind("numpy")
#: The codec of each tensor type met so far (numpy scalars, np.generic, are never cached).
_LEAF_CODECS: dict[type, LeafCodec] = {}


@dataclass
class FlatTree:
    """A flattened state: its tensors by key path (tree order) and the JSON skeleton."""

    tensors: dict[str, Any]
    skeleton: Any
    kinds: dict[str, str] = field(default_factory=dict)  #: key path -> "torch" | "numpy"

    def tensor_kinds(self) -> dict[str, str]:
        """Key path -> codec kind of every tensor (recorded by :func:`flatten`, else derived)."""
        return self.kinds if len(self.kinds) == len(self.tensors) else tensor_kinds(self.skeleton)


def _join(prefix: str, key: str | int) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def flatten(tree: Any, *, describe: bool = True) -> FlatTree:
    """Split a state tree into its tensors (by key path) and a JSON skeleton.

    ``describe=False`` skips checking that each tensor leaf is storable (its dtype, layout), for
    a caller that describes the leaves itself (a restore comparing them with the checkpoint's).

    Raises:
        UnsupportedStateError: naming the key path of the first value that cannot be stored, of
            a key path that two entries of the tree share, or of a container nested deeper than
            :data:`MAX_DEPTH`.
    """
    tensors: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    seen: set[str] = set()
    open_containers: set[int] = set()  # ids of the containers being walked: a cycle check

    def walk(node: Any, path: str) -> Any:
        kind = type(node)
        if kind is float or kind is int or kind is bool or kind is str or node is None:
            return node
        if kind is dict or kind is OrderedDict or kind is list or kind is tuple:
            if id(node) in open_containers:
                raise UnsupportedStateError(path, "the state contains itself (a reference cycle)")
            if len(open_containers) >= MAX_DEPTH:
                raise _too_deep(path)
            open_containers.add(id(node))
            try:
                return container(node, kind, path)
            finally:
                open_containers.discard(id(node))
        return leaf(node, kind, path)

    def container(node: Any, kind: type, path: str) -> Any:
        prefix = f"{path}." if path else ""
        if kind is dict or kind is OrderedDict:
            items = []
            for key, value in node.items():
                key_type = type(key)
                if key_type is not str and key_type is not int:
                    raise UnsupportedStateError(
                        _join(path, repr(key)),
                        f"dict key of type {_type_name(key)} (only str and int keys are stored)",
                    )
                if key_type is str and not key.isascii() and not _utf8(key):
                    raise UnsupportedStateError(path, f"dict key {key!r} is not valid unicode")
                child = f"{prefix}{key}"
                if child in seen:
                    raise _shared_path(child)
                seen.add(child)
                items.append([key, walk(value, child)])
            return {"odict" if kind is OrderedDict else "dict": items}
        out = []
        for i, value in enumerate(node):
            child = f"{prefix}{i}"
            if child in seen:
                raise _shared_path(child)
            seen.add(child)
            out.append(walk(value, child))
        return {"list" if kind is list else "tuple": out}

    def leaf(node: Any, kind: type, path: str) -> Any:
        if isinstance(node, np.generic):
            arr = np.asarray(node)
            if describe:
                _NUMPY.describe(arr, path)
            tensors[path] = arr
            kinds[path] = "numpy"
            return {"tensor": "numpy", "scalar": True}
        codec = _leaf_codec(node, kind, path)
        if describe:
            codec.describe(node, path)
        tensors[path] = node
        kinds[path] = codec.kind
        return {"tensor": codec.kind}

    skeleton = walk(tree, "")
    return FlatTree(tensors=tensors, skeleton=skeleton, kinds=kinds)


def _too_deep(path: str) -> UnsupportedStateError:
    return UnsupportedStateError(
        path,
        f"the state nests deeper than {MAX_DEPTH} levels of dict/list/tuple (the limit, "
        "highmark.tree.MAX_DEPTH); flatten that part of the state",
    )


def _shared_path(path: str) -> UnsupportedStateError:
    return UnsupportedStateError(
        path,
        "two entries of the state have this key path (a key containing '.' next to a "
        "nested key, or an int and a str key with the same digits); rename one",
    )


def _leaf_codec(node: Any, kind: type, path: str) -> LeafCodec:
    """The codec of a tensor leaf of type ``kind`` (not a numpy scalar), looked up once per type.

    Raises:
        UnsupportedStateError: naming ``path``, when no codec stores values of that type.
    """
    codec = _LEAF_CODECS.get(kind)
    if codec is None:
        module = kind.__module__.partition(".")[0]
        if not has_codec(module):
            raise _unstorable(node, path)
        codec = _LEAF_CODECS[kind] = codec_for_kind(module)
    return codec


def _unstorable(node: Any, path: str) -> UnsupportedStateError:
    return UnsupportedStateError(
        path,
        f"value of type {_type_name(node)} cannot be stored: a state holds dict/list/tuple "
        "of torch tensors, numpy arrays and JSON scalars (int, float, bool, str, None)",
    )


def tensor_leaves(tree: Any) -> dict[str, tuple[Any, str]]:
    """The tensor leaves of a state tree by key path, each with its codec kind.

    The lighter half of :func:`flatten` (no skeleton, no check of the leaves' dtypes), for a
    restore that fills an existing tree: a numpy scalar comes as a 0-d array, like there.

    Raises:
        UnsupportedStateError: for a value that cannot be stored, a cycle, a key path that two
            tensors share, or nesting deeper than :data:`MAX_DEPTH`.
    """
    out: dict[str, tuple[Any, str]] = {}
    _collect_leaves(tree, "", out, set())
    return out


def _collect_leaves(node: Any, path: str, out: dict[str, tuple[Any, str]], open_: set[int]) -> None:
    """Adds the tensor leaves under ``node`` to ``out`` (not a closure: no reference cycle
    holds the live tensors afterwards); ``open_`` holds the ids of the containers being walked."""
    kind = type(node)
    if kind is float or kind is int or kind is bool or kind is str or node is None:
        return
    if kind is dict or kind is OrderedDict or kind is list or kind is tuple:
        if id(node) in open_:
            raise UnsupportedStateError(path, "the state contains itself (a reference cycle)")
        if len(open_) >= MAX_DEPTH:
            raise _too_deep(path)
        open_.add(id(node))
        prefix = f"{path}." if path else ""
        pairs = node.items() if kind is dict or kind is OrderedDict else enumerate(node)
        for key, value in pairs:
            _collect_leaves(value, f"{prefix}{key}", out, open_)
        open_.discard(id(node))
        return
    if isinstance(node, np.generic):
        leaf, codec_kind = np.asarray(node), "numpy"
    else:
        leaf, codec_kind = node, _leaf_codec(node, kind, path).kind
    if path in out:
        raise UnsupportedStateError(path, "two tensors of the state have this key path")
    out[path] = (leaf, codec_kind)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unflatten(skeleton: Any, tensors: Mapping[str, Any]) -> Any:
    """Rebuild the state tree from its skeleton and its tensors (already of the right kind).

    The tree holds no reference cycle (nor does anything left behind by building it): it is
    freed, with its tensors, as soon as its last reference goes, without the garbage collector.
    """
    return _build(skeleton, "", tensors)


def _build(node: Any, path: str, tensors: Mapping[str, Any]) -> Any:
    """The subtree of skeleton ``node`` at key path ``path`` (a module-level function, not a
    closure: a recursive closure is a reference cycle that would hold ``tensors``)."""
    if type(node) is not dict:
        return node
    if "tensor" in node:
        leaf = tensors[path]
        return leaf[()] if node.get("scalar") else leaf
    tag, body = next(iter(node.items()))
    prefix = f"{path}." if path else ""
    if tag == "dict":
        return {key: _build(value, f"{prefix}{key}", tensors) for key, value in body}
    if tag == "odict":
        return OrderedDict([(key, _build(value, f"{prefix}{key}", tensors)) for key, value in body])
    items = [_build(value, f"{prefix}{i}", tensors) for i, value in enumerate(body)]
    return tuple(items) if tag == "tuple" else items


def _nodes(skeleton: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key path, node) of a skeleton, the root first (its path is ``prefix``), validating
    the structure.

    Raises:
        ValueError: when the skeleton is malformed or two nodes below the root share a key path.
    """
    seen: set[str] = set()
    stack: list[tuple[str, Any, int]] = [(prefix, skeleton, 0)]  # depth: containers above
    while stack:
        path, node, depth = stack.pop()
        root = depth == 0
        where = path or "<root>"
        if not root:
            if path in seen:
                raise ValueError(f"key path {path!r} appears twice")
            seen.add(path)
        yield path, node
        if not isinstance(node, dict):
            if not isinstance(node, _JSON_SCALARS):
                raise ValueError(f"{where}: {type(node).__name__} is not a skeleton node")
            continue
        if "tensor" in node:
            kind, scalar = node["tensor"], node.get("scalar", True)
            if type(kind) is not str or not has_codec(kind) or scalar is not True:
                shown = kind if type(kind) is str else type(kind).__name__
                raise ValueError(f"{where}: bad tensor node (kind {shown!r:.40})")
            if not set(node) <= {"tensor", "scalar"}:
                raise ValueError(f"{where}: bad tensor node with keys {sorted(node)[:5]}")
            continue
        if len(node) != 1 or next(iter(node)) not in _CONTAINERS:
            raise ValueError(f"{where}: bad skeleton node with keys {sorted(node)}")
        if depth >= MAX_DEPTH:
            raise ValueError(
                f"the tree nests deeper than {MAX_DEPTH} levels (the limit) at {where}"
            )
        tag, body = next(iter(node.items()))
        if not isinstance(body, list):
            raise ValueError(f"{where}: {tag} body is not a list")
        children: list[tuple[str, Any, int]] = []
        if tag in ("dict", "odict"):
            for pair in body:
                ok = isinstance(pair, list) and len(pair) == 2
                if not ok or type(pair[0]) not in (str, int):
                    raise ValueError(f"{where}: bad dict entry (not a [str or int key, node] pair)")
                children.append((_join(path, pair[0]), pair[1], depth + 1))
        else:
            children = [(_join(path, i), child, depth + 1) for i, child in enumerate(body)]
        stack.extend(reversed(children))


def tensor_kinds(skeleton: Any, prefix: str = "") -> dict[str, str]:
    """The tensor leaves of a skeleton: key path -> kind ("torch" or "numpy"), in tree order.

    ``prefix`` is the key path of the skeleton's root, for a subtree (e.g. ``"model"``).

    Raises:
        ValueError: when the skeleton is malformed (e.g. read from a damaged manifest).
    """
    return {
        path: str(node["tensor"])
        for path, node in _nodes(skeleton, prefix)
        if isinstance(node, dict) and "tensor" in node
    }


def select(skeleton: Any, keys: Sequence[str]) -> Any:
    """The part of a skeleton under the given key paths (``["model"]``, ``["optimizer.state"]``).

    Containers on the way keep only the selected branches; a list or tuple that loses elements
    comes back as a dict keyed by the kept indices, so key paths into the result stay the same.

    Raises:
        ConfigError: when a key path is not in the tree (the message lists the top-level keys).
    """
    if isinstance(keys, str):
        raise ConfigError(f"keys must be a list of key paths, not the string {keys!r}")
    wanted = set(keys)
    if not wanted:
        raise ConfigError("keys must name at least one key path")
    found: set[str] = set()

    def walk(node: Any, path: str) -> Any | None:
        if not isinstance(node, dict) or "tensor" in node:
            return None
        tag, body = next(iter(node.items()))
        pairs = list(body) if tag in ("dict", "odict") else list(enumerate(body))
        kept = []
        for key, child in pairs:
            cpath = _join(path, key)
            if cpath in wanted:
                found.add(cpath)
                kept.append([key, child])
            elif any(w.startswith(cpath + ".") for w in wanted):
                sub = walk(child, cpath)
                if sub is not None:
                    kept.append([key, sub])
        if not kept:
            return None
        if tag in ("list", "tuple"):
            if len(kept) == len(pairs):
                return {tag: [child for _, child in kept]}
            tag = "dict"
        return {tag: kept}

    result = walk(skeleton, "")
    missing = sorted(wanted - found)
    if missing:
        top = [str(p) for p, _ in top_level_keys(skeleton)]
        raise ConfigError(
            f"key path(s) {', '.join(map(repr, missing))} not in the checkpoint "
            f"(top-level keys: {', '.join(top) or 'none'})"
        )
    return result


def top_level_keys(skeleton: Any) -> list[tuple[str | int, Any]]:
    """The root's (key, child node) pairs; empty when the root is not a container."""
    if not isinstance(skeleton, dict) or "tensor" in skeleton:
        return []
    tag, body = next(iter(skeleton.items()))
    return [(p[0], p[1]) for p in body] if tag in ("dict", "odict") else list(enumerate(body))
