"""The layout of the package: no import cycle anywhere, the size budgets, no stdlib-named module.

The import graph is read from the sources with :mod:`ast`, so it holds every import a module can
make: at module level, inside functions (lazy), under ``TYPE_CHECKING``, and by name
(``importlib.import_module("highmark...")``, or a ``"highmark.module:attribute"`` registry entry
such as the torch leaf codec). A package's ``__init__`` is not counted as imported by its own
submodules: Python runs it first by design, so it never forms a cycle with them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "highmark"
_BY_NAME = re.compile(r"^(\w+(?:\.\w+)+):\w+$")  # "package.module:attribute", loaded by name


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(module, name or None) for each import statement or import by name in ``node``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            for alias in sub.names:
                yield alias.name, None
        elif isinstance(sub, ast.ImportFrom):
            base = sub.module or ""
            if sub.level:
                parts = module.split(".")
                package = parts if is_package else parts[:-1]
                anchor = package[: len(package) - sub.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in sub.names:
                yield base, alias.name
        elif isinstance(sub, ast.Call) and sub.args and isinstance(sub.args[0], ast.Constant):
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "import_module" and isinstance(sub.args[0].value, str):
                yield sub.args[0].value, None
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            match = _BY_NAME.match(sub.value)
            if match:
                yield match.group(1), None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` -> the modules of the package it imports."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for base, alias in _imported(tree, name, path.name == "__init__.py"):
            if alias is not None and f"{base}.{alias}" in modules:
                targets.add(f"{base}.{alias}")  # `from package import submodule`
            elif base in modules:
                targets.add(base)
        targets.discard(name)
        graph[name] = {t for t in targets if not name.startswith(t + ".")}  # its own packages
    return graph


def rooms(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between rooms (a top-level module or subpackage of the package; the package's
    own ``__init__`` is the room of its name)."""

    def room(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2])

    out: dict[str, set[str]] = {}
    for name, targets in graph.items():
        out.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected group of nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs here are small
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_in(graph, group) for group in groups]


def _path_in(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest cycle through the first node of ``group``, staying inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ()) & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return group  # pragma: no cover - a strongly connected group always has one


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def _sizes() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_sizes", REPO / ".ci" / "sizes.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the package


def test_no_module_imports_back_what_imports_it() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_no_room_imports_back_a_room_that_imports_it() -> None:
    assert cycles(rooms(import_graph(PACKAGE))) == []


def test_no_module_is_named_like_a_standard_library_module() -> None:
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    clash = [name for name in module_names(PACKAGE) if name.rpartition(".")[2] in stdlib]
    assert clash == []


def test_no_file_or_function_is_over_its_size_budget() -> None:
    assert _sizes().main([str(PACKAGE)]) == 0


# --------------------------------------------------------------------------- the checks


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg import a\n    return a\n",
    })  # fmt: skip
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import B\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
    })  # fmt: skip
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_cycle_through_an_import_by_name_is_found(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import importlib\nB = importlib.import_module('pkg.b')\n",
        "pkg/b.py": "REGISTRY = {'a': 'pkg.a:A'}\n",
    })  # fmt: skip
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_cycle_between_rooms_is_found_without_one_between_modules(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/x/__init__.py": "",
        "pkg/x/low.py": "",
        "pkg/x/high.py": "import pkg.y.mid\n",
        "pkg/y/__init__.py": "",
        "pkg/y/mid.py": "from pkg.x import low\n",
    })  # fmt: skip
    graph = import_graph(root)
    assert cycles(graph) == []
    assert cycles(rooms(graph)) == [["pkg.x", "pkg.y", "pkg.x"]]


def test_a_package_is_not_imported_by_its_own_submodules(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import core\n",
        "pkg/sub/__init__.py": "from pkg.sub.core import X\n",
        "pkg/sub/core.py": "from pkg.sub import helper\nX = 1\n",
        "pkg/sub/helper.py": "",
    })  # fmt: skip
    assert cycles(import_graph(root)) == []


@pytest.mark.parametrize(
    ("rel", "text", "found"),
    [
        ("m.py", "x = 1\n" * 401, "401 lines (a file <= 400)"),
        ("m.py", "def f():\n" + "    x = 1\n" * 80, "f() is 81 lines"),
        ("integrations/k.py", '"""A doc."""\n' + "x = 1\n" * 201, "201 lines of framework glue"),
    ],
)
def test_the_size_check_names_what_is_over(tmp_path: Path, rel: str, text: str, found: str) -> None:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    assert any(found in breach for breach in _sizes().breaches(path))


def test_the_size_check_counts_glue_without_its_docstrings(tmp_path: Path) -> None:
    path = tmp_path / "integrations" / "k.py"
    path.parent.mkdir()
    doc = '    """' + "\n".join(["Documentation."] * 60) + '"""\n'
    path.write_text("class C:\n" + doc + "    x = 1\n" * 150)
    assert _sizes().breaches(path) == []
