"""The size budgets of the style guide: a source file <= 400 lines, a function <= 80 lines, and a
framework integration's glue (``integrations/<framework>.py``) <= 200 lines of code.

A function's size is ``end_lineno - lineno + 1`` of its ``def`` (docstring included, decorators
not); glue is counted without docstrings, comments and blank lines (the callbacks' docstrings
are their user documentation). Usage: ``python .ci/sizes.py [ROOT ...]`` (default ``src``);
prints every breach and exits 1 when there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE = 400
MAX_FUNCTION = 80
MAX_GLUE = 200


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                is_text = isinstance(first.value.value, str)
                end = (first.end_lineno or first.lineno) if is_text else first.lineno - 1
                lines.update(range(first.lineno, end + 1))
    return lines


def _is_glue(path: Path) -> bool:
    """Whether ``path`` is a framework integration module (``integrations/keras.py``...)."""
    return path.parent.name == "integrations" and not path.name.startswith("_")


def breaches(path: Path) -> list[str]:
    """Every size budget ``path`` breaks, one sentence each."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    found = []
    if len(lines) > MAX_FILE:
        found.append(f"{path}: {len(lines)} lines (a file <= {MAX_FILE}): split it by what it does")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > MAX_FUNCTION:
                found.append(
                    f"{path}:{node.lineno}: {node.name}() is {size} lines (a function <= "
                    f"{MAX_FUNCTION})"
                )
    if _is_glue(path):
        docs = _docstring_lines(tree)
        code = [
            n
            for n, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#") and n not in docs
        ]
        if len(code) > MAX_GLUE:
            found.append(
                f"{path}: {len(code)} lines of framework glue (<= {MAX_GLUE}): move what is "
                "not about the framework into integrations/_common.py or _session.py"
            )
    return found


def main(roots: list[str]) -> int:
    problems = [b for root in roots for p in sorted(Path(root).rglob("*.py")) for b in breaches(p)]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src"]))
