"""Skeletons: the JSON description of a state tree's structure, read back and selected from.

A skeleton (the format is described in :mod:`highmark.state.tree`) comes back from a manifest,
so nothing in it is trusted: :func:`tensor_kinds` walks it without recursion, validating every
node and refusing nesting deeper than :data:`MAX_DEPTH` (the same limit :func:`~highmark.state.
tree.flatten` applies when saving, so no save produces what a restore would refuse).
:func:`select` keeps the parts under some key paths (a partial restore), :func:`top_level_keys`
lists the root's entries (one file per top-level key).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from highmark.errors import ConfigError
from highmark.state.leafcodecs import has_codec

__all__ = ["MAX_DEPTH", "join_key", "select", "tensor_kinds", "top_level_keys"]

#: How many dict/list/tuple levels a state may nest (the root container is level 1); one limit
#: for saving and reading, far below what Python's recursion limit allows.
MAX_DEPTH = 100

_JSON_SCALARS = (int, float, bool, str, type(None))
_CONTAINERS = ("dict", "odict", "list", "tuple")


def join_key(prefix: str, key: str | int) -> str:
    """The key path of ``key`` under ``prefix`` (``"model" + "weight" -> "model.weight"``)."""
    return f"{prefix}.{key}" if prefix else str(key)


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
                children.append((join_key(path, pair[0]), pair[1], depth + 1))
        else:
            children = [(join_key(path, i), child, depth + 1) for i, child in enumerate(body)]
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
            cpath = join_key(path, key)
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
