"""How the ``highmark`` commands print: rich tables and lines built from the commands' data.

Each function takes the plain data a command computed (the same dicts ``--json`` prints) and
writes it to stdout; progress and status go to stderr. Only the command line uses this module.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from highmark.cli.units import size

__all__ = [
    "age",
    "compare_table",
    "console",
    "diff_table",
    "ls_table",
    "num",
    "prune_lines",
    "replay_table",
    "show_tables",
    "size",
    "verify_lines",
    "warn",
]


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr), created per call so redirections are honoured."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")


def warn(lines: list[str]) -> None:
    """Prints each line on stderr as ``highmark: warning: LINE``."""
    for text in lines:
        sys.stderr.write(f"highmark: warning: {text}\n")


def _table(title: str, columns: list[str], left: set[str]) -> Any:
    """A table whose ``left`` columns are left-aligned; long cells fold."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", overflow="fold")
    return table


def age(seconds: float) -> str:
    """A duration for people, in its largest whole unit: ``3h``."""
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


def num(value: Any) -> str:
    """A metric or count for a table cell (``-`` when missing)."""
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def ls_table(data: dict[str, Any]) -> None:
    """Prints ``highmark ls``: one row per checkpoint; best in bold; totals as the caption.

    A folder of runs prints one table per run and the folder's totals.
    """
    if "runs" in data:
        for run in data["runs"]:
            ls_table(run)
        runs, total = len(data["runs"]), size(data["total_bytes"])
        _line(f"{data['folder']}: {runs} run(s), {data['count']} checkpoint(s), {total}")
        return
    monitor = data["monitor"]
    names: dict[str, None] = {}
    for row in data["checkpoints"]:
        names.update(dict.fromkeys(k for k in row["metrics"] if k != monitor))
    columns = ["step", monitor or "monitored", *names, "size", "age", "flags"]
    table = _table(f"{data['run']}  (monitor: {monitor or '-'})", columns, {"flags"})
    for row in data["checkpoints"]:
        table.add_row(
            str(row["step"]), num(row["monitored"]), *(num(row["metrics"].get(k)) for k in names),
            size(row["size"]), age(row["age_s"]), " ".join(row["flags"]),
            style="bold green" if "best" in row["flags"] else None,
        )  # fmt: skip
    table.caption = f"{data['count']} checkpoint(s), {size(data['total_bytes'])}"
    console().print(table)


def show_tables(data: dict[str, Any]) -> None:
    """Prints ``highmark show``: metadata lines, the files and the tensors with checksums."""
    out = console()
    out.print(f"[bold]{data['run']}[/] step {data['step']}  {' '.join(data['flags'])}")
    out.print(f"path: {data['path']}  size: {size(data['size'])}")
    out.print(f"metrics: {json.dumps(data['metrics'])}")
    out.print(f"metadata: {json.dumps(data['metadata'])}")
    files = _table("files", ["name", "size", "tensors", "xxh3"], {"name", "xxh3"})
    for f in data["files"]:
        files.add_row(str(f["name"]), size(f["size"] or 0), str(f["tensors"]), str(f["xxh3"]))
    out.print(files, _key_tree(data["tensors"]))


def _key_tree(tensors: list[dict[str, Any]]) -> Any:
    """The tensors as a tree of their key paths; leaves show dtype, shape and checksum."""
    from rich.markup import escape
    from rich.tree import Tree

    root = Tree("[bold]tensors[/]")
    nodes: dict[str, Any] = {}
    for t in tensors:
        parts = str(t["key"]).split(".")
        parent, path = root, ""
        for part in parts[:-1]:
            path = f"{path}.{part}" if path else part
            if path not in nodes:
                nodes[path] = parent.add(escape(part))
            parent = nodes[path]
        shape = "x".join(str(d) for d in t["shape"] or []) or "scalar"
        dims = escape(f"[{shape}]")
        parent.add(f"{escape(parts[-1])}  [cyan]{t['dtype']}[/] {dims}  [dim]{t['xxh3']}[/]")
    return root


def diff_table(data: dict[str, Any]) -> None:
    """Prints ``highmark show --diff``: per tensor status and distances; keys added/removed."""
    columns = ["key", "status", "dtype", "shape", "max |b-a|", "rel L2", "cosine"]
    table = _table(f"{data['a']}  ->  {data['b']}", columns, {"key", "status"})
    for t in data["tensors"]:
        table.add_row(
            t["key"], t["status"], str(t["dtype"]), str(t["shape"]),
            num(t.get("max_abs_diff")), num(t.get("rel_l2")), num(t.get("cosine")),
            style=None if t["status"] == "same" else "yellow",
        )  # fmt: skip
    out = console()
    out.print(table)
    for what in ("added", "removed", "changed"):
        out.print(f"{what}: {', '.join(data[what]) or 'none'}", markup=False)
    if data.get("left_out"):
        count = len(data["left_out"])
        out.print(f"left out: {count} RNG state tensor(s) (--rng compares them too)")


def compare_table(data: dict[str, Any]) -> None:
    """Prints ``highmark compare``: one column per run, side by side; the winner starred.

    The stop reasons are sentences, listed under the table (one line per stopped run) so that the
    table's columns stay narrow enough for an 80-column terminal.
    """
    from rich.table import Table

    runs = data["runs"]
    title = "runs" + (f" - winner: {data['winner']}" if data["winner"] else "")
    table = Table(title=title)
    table.add_column("", style="bold", no_wrap=True)
    for r in runs:
        name = ("★ " if r["winner"] else "") + r["run"]
        table.add_column(name, overflow="fold", style="bold green" if r["winner"] else None)
    fields: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("monitor", lambda r: f"{r['monitor']} ({r['mode']})"),
        ("best", lambda r: num(r["best_value"])),
        ("best step", lambda r: num(r["best_step"])),
        (
            "status",
            lambda r: num(r["status"]) + (f" ({r['stop_cause']})" if r["stop_cause"] else ""),
        ),
        ("stop step", lambda r: num(r["stop_step"])),
        ("run / budget", lambda r: f"{num(r['run_length'])} / {num(r['budget'])} {r['unit']}s"),
        ("wall time (s)", lambda r: num(r["wall_time"])),
        ("checkpoints", lambda r: f"{r['checkpoints']} ({size(r['bytes'])})"),
    ]
    for label, cell in fields:
        table.add_row(label, *(cell(r) for r in runs))
    out = console()
    out.print(table)
    stopped = [r for r in runs if r["stop_reason"]]
    if stopped:
        out.print("stop reasons:")
    for r in stopped:
        at = f" ({r['unit']} {r['stop_step']})" if r["stop_step"] is not None else ""
        line = f"{r['run']}{at}: {r['stop_reason']}"
        text = textwrap.fill(line, out.width, initial_indent="  ", subsequent_indent="    ")
        out.print(text, markup=False, soft_wrap=True)
    if data["note"]:
        out.print(data["note"])


def prune_lines(data: dict[str, Any]) -> None:
    """Prints ``highmark prune``: one line per deletion and the bytes freed."""
    verb = "would delete" if data["dry_run"] else "deleted"
    for d in data["delete"]:
        _line(f"{verb} step {d['step']} ({size(d['size'])}): {d['reason']}")
    freed = size(data["bytes_freed"])
    _line(f"{verb} {len(data['delete'])} checkpoint(s), {freed} freed; kept {len(data['keep'])}")


def verify_lines(data: dict[str, Any]) -> None:
    """Prints ``highmark verify``: one line per damaged file, then the count."""
    for d in data["damaged"]:
        _line(f"DAMAGED step {d['step']}: {d['file']}: {d['problem']}")
    _line(f"{data['checkpoints']} checkpoint(s) checked, {len(data['damaged'])} damaged file(s)")


def replay_table(result: Any, policies: int, curves: int) -> None:
    """Prints ``highmark replay``: one row per policy, the recommended one in bold."""
    score = result.score is not None
    columns = ["policy", "budget saved", "mean regret", "max regret", "stopped"]
    columns += ["score regret"] if score else []
    title = f"{policies} policies x {curves} curve(s), monitor {result.monitor} ({result.mode})"
    table = _table(title, columns, {"policy"})
    for p in result.policies:
        cells = [p.label, f"{p.mean_saved:.1%}", num(p.mean_regret), num(p.max_regret),
                 f"{p.stopped_fraction:.0%}"]  # fmt: skip
        cells += [num(p.mean_score_regret)] if score else []
        table.add_row(*cells, style="bold green" if p is result.recommended else None)
    out = console()
    out.print(table)
    out.print(("recommended: " if result.recommended else "") + result.note)
