"""``highmark watch``: a live terminal view of one run (last metrics, best, patience, ETA).

The view reads the run's files only (``run.json``, ``history.jsonl``, the checkpoint index),
through the dashboard's run reading, and never writes: Ctrl-C leaves the run untouched.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from highmark.serve.runs import RunFiles, read_run


@dataclass
class WatchState:
    """What the view shows, worked out from a run's files (pure: no I/O)."""

    status: str
    monitor: str | None
    last: dict[str, Any]
    best_step: int | None
    best_value: float | None
    wait: int | None
    patience: int | None
    kept: list[int]
    eta_s: float | None
    stop_reason: str | None


def _best(files: RunFiles) -> tuple[int | None, float | None]:
    info, key = files.info, files.monitor
    if info.get("best_step") is not None and key:
        value = (info.get("best_metrics") or {}).get(key)
        return int(info["best_step"]), value
    sign = -1.0 if files.mode == "max" else 1.0
    scored = [(sign * r["metrics"][key], r["step"]) for r in files.records
              if key and isinstance(r.get("metrics", {}).get(key), float | int)
              and math.isfinite(r["metrics"][key])]  # fmt: skip
    if not scored:
        return None, None
    value, step = min(scored)
    return step, sign * value


def summarize(files: RunFiles) -> WatchState:
    """Works out best, wait (evaluations since the best), patience and the ETA of the stop.

    The ETA assumes no further improvement: the evaluations patience has left (or the budget's
    remaining steps, whichever is fewer) times the median seconds between recent evaluations.
    """
    info, records = files.info, files.records
    best_step, best_value = _best(files)
    patience = (info.get("policy") or {}).get("patience")
    wait = None if best_step is None else sum(1 for r in records if r["step"] > best_step)
    status = str(info.get("status") or ("running" if records else "empty"))
    eta = None
    times = [float(r["time"]) for r in records[-11:] if r.get("time") is not None]
    if status == "running" and len(times) >= 2:
        left = [patience - wait] if isinstance(patience, int) and wait is not None else []
        if info.get("budget") is not None and records:
            left.append(int(info["budget"]) - int(records[-1]["step"]))
        if left:
            gaps = [b - a for a, b in itertools.pairwise(times)]
            eta = max(0, min(left)) * statistics.median(gaps)
    return WatchState(status, files.monitor, dict(records[-1]) if records else {}, best_step,
                      best_value, wait, patience if isinstance(patience, int) else None,
                      sorted(int(c["step"]) for c in files.checkpoints), eta,
                      info.get("stop_reason"))  # fmt: skip


def render(url: str, state: WatchState) -> Any:
    """The rich renderable of one run's state."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table(title=f"{url} [{state.status}]", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    last = state.last
    table.add_row("last step", str(last.get("step", "-")))
    for name, value in sorted((last.get("metrics") or {}).items()):
        table.add_row(f"  {name}", "-" if value is None else f"{value:.6g}")
    best = "-" if state.best_value is None else f"{state.best_value:.6g}"
    table.add_row(f"best {state.monitor or ''}".strip(), f"{best} at step {state.best_step}")
    if state.patience is not None and state.wait is not None:
        table.add_row("patience", f"wait {state.wait}/{state.patience}")
    table.add_row("checkpoints", ", ".join(map(str, state.kept)) or "-")
    if state.eta_s is not None:
        table.add_row("stop ETA", f"~{state.eta_s:.0f} s if no improvement")
    if state.stop_reason:
        table.add_row("stop reason", state.stop_reason)
    parts: list[Any] = [table]
    if state.patience and state.wait is not None:
        parts.append(ProgressBar(total=state.patience, completed=min(state.wait, state.patience)))
    return Group(*parts)


def _stamp(url: str, options: Mapping[str, Any] | None) -> tuple[int, int]:
    from highmark.store.local import open_storage
    from highmark.store.runfiles import HISTORY_FILE, RUN_FILE

    storage = open_storage(url, storage_options=dict(options or {}))
    return tuple(storage.size(n) if storage.exists(n) else -1  # type: ignore[return-value]
                 for n in (HISTORY_FILE, RUN_FILE))  # fmt: skip


def watch(url: str, options: Mapping[str, Any] | None = None, *, once: bool = False,
          interval: float = 1.0) -> None:  # fmt: skip
    """Shows the run; with ``once`` a single render, else live until Ctrl-C (polls the files)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if once:
        console.print(render(url, summarize(read_run(url, options))))
        return
    seen = _stamp(url, options)
    view = render(url, summarize(read_run(url, options)))
    try:
        if not console.is_terminal:  # a pipe or a file: one full render per change
            console.print(view)
        with Live(view, console=console) if console.is_terminal else _Quiet() as live:
            while True:
                time.sleep(interval)  # polling the files, not synchronisation
                stamp = _stamp(url, options)
                if stamp != seen:
                    seen, view = stamp, render(url, summarize(read_run(url, options)))
                    if live is None:
                        console.print(view)
                    else:
                        live.update(view)
    except KeyboardInterrupt:
        return


class _Quiet:
    """Stands in for rich's Live off a terminal (renders are printed one after another)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
