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
``a.b`` would name two things. A tree nests at most :data:`~highmark.state.skeleton.MAX_DEPTH`
containers deep (the root container is level 1): :func:`flatten` refuses a deeper state, and a
skeleton read back that nests deeper is malformed (:mod:`highmark.state.skeleton`), so no save
produces what a restore would refuse.

Tensors are handled by the *leaf codecs* of :mod:`highmark.state.leafcodecs`, keyed by the leaf's
top-level module (numpy built in, torch imported lazily by name), so this module (and the store
built on it) never imports torch itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from highmark.errors import UnsupportedStateError
from highmark.state.leafcodecs import LeafCodec, codec_for_kind, has_codec
from highmark.state.skeleton import MAX_DEPTH, join_key, tensor_kinds

__all__ = ["FlatTree", "check_state_object", "flatten", "tensor_leaves", "unflatten"]

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
                        join_key(path, repr(key)),
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
        "highmark.state.skeleton.MAX_DEPTH); flatten that part of the state",
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


def check_state_object(name: str, obj: Any) -> FlatTree:
    """Check that ``obj`` has ``state_dict``/``load_state_dict`` and that its state is storable.

    Returns the flattened ``{name: obj.state_dict()}``, so key paths start with ``name``.

    Raises:
        UnsupportedStateError: naming ``name`` (no state methods) or the key path of the first
            value that cannot be stored (e.g. ``scheduler.lr_lambdas.0``).
    """
    missing = [m for m in ("state_dict", "load_state_dict") if not callable(getattr(obj, m, None))]
    if missing:
        raise UnsupportedStateError(
            name,
            f"{type(obj).__qualname__} has no {' or '.join(m + '()' for m in missing)}; "
            "track objects with state_dict()/load_state_dict()",
        )
    return flatten({name: obj.state_dict()})
