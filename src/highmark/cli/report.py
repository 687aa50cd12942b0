"""Self-contained HTML and PNG reports of training runs, and the plot of a policy replay.

A report is one HTML file that needs no network to view: the page of ``highmark serve`` (runs
table, interactive learning curves of every metric with the best step, the stop step and every
saved checkpoint marked), with its scripts and the runs' data embedded inline; its
Content-Security-Policy allows only those inline scripts. Plain HTML tables of the runs and their
checkpoints follow for readers without JavaScript. ``--png`` is a static matplotlib picture.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from highmark.__about__ import __version__
from highmark.cli.units import size
from highmark.replay import ReplayResult
from highmark.replay.curves import Curve, curve_from_records

__all__ = ["RunData", "load_run", "render_curves", "render_html", "replay_plot", "write_report"]


@dataclass
class RunData:
    """Everything a report shows about one run, read from its directory."""

    url: str
    name: str
    info: dict[str, Any]
    curve: Curve
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # history.jsonl, as read

    @property
    def monitor(self) -> str | None:
        """The monitored metric (from ``run.json`` or the checkpoint index), if known."""
        value = self.info.get("monitor")
        return str(value) if value else None

    @property
    def best_step(self) -> int | None:
        """The best step: from ``run.json``, else the checkpoint flagged best."""
        if self.info.get("best_step") is not None:
            return int(self.info["best_step"])
        best = [c["step"] for c in self.checkpoints if c.get("is_best")]
        return int(best[0]) if best else None

    @property
    def stop_step(self) -> int | None:
        """The step at which the stopping policy ended the run, if it did."""
        value = self.info.get("stop_step")
        return int(value) if value is not None else None


def _checkpoint_rows(url: str, storage_options: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    from highmark.policy.monitor import Monitor
    from highmark.store.index import INDEX, load_index
    from highmark.store.local import open_storage
    from highmark.store.manager import CheckpointManager

    storage = open_storage(url, storage_options=dict(storage_options or {}))
    state = load_index(storage) if storage.exists(INDEX) else None
    if state is None:
        return []
    monitor = Monitor.from_config(state.monitor) if state.monitor else None
    with CheckpointManager(storage, monitor=monitor, read_only=True) as manager:
        return [
            {
                "step": c.step,
                "metrics": dict(c.metrics),
                "size": c.size,
                "created": c.created,
                "is_best": c.is_best,
                "is_latest": c.is_latest,
                "kept_by": c.kept_by,
            }
            for c in manager.checkpoints()
        ]


def load_run(url: str, storage_options: Mapping[str, Any] | None = None) -> RunData:
    """Reads a run's ``run.json``, ``history.jsonl`` and checkpoint index (any may be missing)."""
    from highmark.errors import CheckpointNotFoundError
    from highmark.store.runfiles import read_history, read_run_info

    opts = dict(storage_options or {})
    info = read_run_info(url, storage_options=opts) or {}
    records = read_history(url, storage_options=opts)
    checkpoints = _checkpoint_rows(url, opts)
    if not records and not checkpoints and not info:
        raise CheckpointNotFoundError(f"{url}: not a highmark run (no run.json, history, or index)")
    if not records:  # no history: the checkpoints' metrics are the best curve we have
        records = [{"step": c["step"], "metrics": c["metrics"]} for c in checkpoints]
    name = posixpath.basename(str(url).rstrip("/")) or str(url)
    curve = curve_from_records(records, name)
    return RunData(str(url), name, info, curve, checkpoints, records)


def _metric_order(runs: Sequence[RunData]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        if run.monitor:
            names.setdefault(run.monitor, None)
    for run in runs:
        for name in run.curve.metric_names:
            names.setdefault(name, None)
    return list(names)


def _value_at(curve: Curve, key: str, step: int) -> float | None:
    for s, row in zip(curve.steps, curve.rows, strict=True):
        if s == step and row.get(key) is not None:
            value = float(row[key])  # type: ignore[arg-type]
            return value if math.isfinite(value) else None
    return None


def render_curves(runs: Sequence[RunData], fmt: str = "svg") -> bytes:
    """The learning curves of every metric of ``runs`` (overlaid) as SVG or PNG bytes.

    One panel per metric. Lines are runs; a star marks the best step, a dashed vertical line the
    stop step, hollow circles every checkpoint still saved.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    metrics = _metric_order(runs) or ["(no metrics)"]
    ncols = 1 if len(metrics) == 1 else 2
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(6.4 * ncols, 3.4 * nrows), layout="constrained")
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for index, key in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for run, colour in zip(runs, colours, strict=True):
            steps, values = run.curve.series(key)
            if not steps:
                continue
            ax.plot(steps, [v if math.isfinite(v) else math.nan for v in values], color=colour)
            saved = [c["step"] for c in run.checkpoints]
            marks = [(s, _value_at(run.curve, key, s)) for s in saved]
            xs = [s for s, v in marks if v is not None]
            ys = [v for _, v in marks if v is not None]
            if xs:
                ax.plot(xs, ys, "o", mfc="none", color=colour, ms=6)
            best = run.best_step
            best_value = None if best is None else _value_at(run.curve, key, best)
            if best is not None and best_value is not None:
                ax.plot([best], [best_value], "*", color=colour, ms=14, mec="black", mew=0.6)
            if run.stop_step is not None:
                ax.axvline(run.stop_step, color=colour, ls="--", lw=1)
    handles = [Line2D([], [], color=c, label=r.name) for r, c in zip(runs, colours, strict=True)]
    handles += [
        Line2D([], [], marker="*", ls="", color="grey", mec="black", ms=12, label="best step"),
        Line2D([], [], ls="--", color="grey", label="stop step"),
        Line2D([], [], marker="o", ls="", mfc="none", color="grey", label="saved checkpoint"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    buffer = io.BytesIO()
    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buffer, format=fmt, dpi=110, metadata=metadata)
    return buffer.getvalue()


def _cell(value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return f"<td{attr}>{html.escape(text)}</td>"


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return _dt.datetime.fromtimestamp(float(ts), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _summary_table(runs: Sequence[RunData]) -> str:
    head = ["run", "monitor", "status", "best step", "best value", "stop step", "stop reason",
            "run / budget", "wall time (s)", "checkpoints", "bytes"]  # fmt: skip
    rows = []
    for run in runs:
        info, key = run.info, run.monitor
        best = run.best_step
        best_value = None if best is None or key is None else _value_at(run.curve, key, best)
        done = info.get("epochs_run") if info.get("unit", "epoch") == "epoch" else None
        done = info.get("steps_run") if done is None else done
        budget = f"{done if done is not None else '-'} / {info.get('budget', '-')}"
        wall = info.get("wall_time")
        cells = [
            _cell(run.name, "l"), _cell(key, "l"), _cell(info.get("status"), "l"), _cell(best),
            _cell(best_value), _cell(run.stop_step), _cell(info.get("stop_reason"), "l"),
            _cell(budget), _cell(float(wall) if wall is not None else None),
            _cell(len(run.checkpoints)), _cell(size(sum(c["size"] for c in run.checkpoints))),
        ]  # fmt: skip
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f'<th class="l">{html.escape(h)}</th>' for h in head)
    return f'<table id="runs"><tr>{header}</tr>{"".join(rows)}</table>'


def _checkpoint_table(run: RunData) -> str:
    if not run.checkpoints:
        return "<p>No checkpoints saved.</p>"
    names: dict[str, None] = {}
    for c in run.checkpoints:
        for k in c["metrics"]:
            names.setdefault(k, None)
    head = ["step", *names, "size", "created (UTC)", "flags", "kept by"]
    rows = []
    for c in run.checkpoints:
        flags = " ".join(f for f, on in (("best", c["is_best"]), ("latest", c["is_latest"])) if on)
        kept = c.get("kept_by")
        kept_text = ", ".join(kept) if isinstance(kept, (list, tuple)) else kept
        cells = [_cell(c["step"])] + [_cell(c["metrics"].get(k)) for k in names]
        cells += [_cell(size(c["size"])), _cell(_when(c["created"])), _cell(flags, "l")]
        cells.append(_cell(kept_text, "l"))
        cls = ' class="best"' if c["is_best"] else ""
        rows.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table class="checkpoints"><tr>{header}</tr>{"".join(rows)}</table>'


def render_html(runs: Sequence[RunData], title: str = "highmark report") -> str:
    """The report as one self-contained HTML page (the dashboard's page, data embedded)."""
    from highmark.serve.page import render_static
    from highmark.serve.payload import run_payload
    from highmark.serve.runs import RunFiles

    now = _dt.datetime.now(tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    payloads = [
        run_payload(run.url, RunFiles(run.url, run.info, run.records or _records(run),
                                      run.checkpoints, run.monitor, run.info.get("mode")))
        for run in runs
    ]  # fmt: skip
    sections = "".join(
        f"<h3>{html.escape(run.name)}</h3><p class=meta>{html.escape(run.url)}</p>"
        + _checkpoint_table(run)
        for run in runs
    )
    tables = (
        f"<noscript><h2>Runs</h2>{_summary_table(runs)}<h2>Checkpoints</h2>{sections}</noscript>"
    )
    meta = f"{len(runs)} run(s) · generated {now} by highmark {__version__}"
    return render_static(payloads, title, meta, extra=tables)


def _records(run: RunData) -> list[dict[str, Any]]:
    return [{"step": s, "metrics": r} for s, r in zip(run.curve.steps, run.curve.rows, strict=True)]


def write_report(
    urls: Sequence[str],
    out: str,
    png: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[RunData]:
    """Reads the runs at ``urls``, writes the HTML report to ``out`` and the plot to ``png``."""
    runs = [load_run(u, storage_options) for u in urls]
    with open(out, "w", encoding="utf-8") as f:
        f.write(render_html(runs))
    if png:
        with open(png, "wb") as f:
            f.write(render_curves(runs, "png"))
    return runs


def _front_labels(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """One label per distinct point on the trade-off front (no other saves more for less regret).

    Policies landing on the same point share one label: the first one, ``+N`` for the others.
    """
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, label in points:
        groups.setdefault((round(x, 9), round(y, 12)), []).append(label)
    front = [
        (x, y) for (x, y) in groups
        if not any(ox >= x and oy <= y and (ox, oy) != (x, y) for ox, oy in groups)
    ]  # fmt: skip
    out = []
    for x, y in front:
        labels = groups[(x, y)]
        more = f" (+{len(labels) - 1})" if len(labels) > 1 else ""
        out.append((x, y, labels[0] + more))
    return out


def replay_plot(result: ReplayResult, path: str) -> None:
    """The trade-off of a replay, budget saved vs mean regret, one point per policy, to ``path``.

    The format follows the file's suffix (``.png``, ``.svg``, ``.pdf``); the recommended policy is
    highlighted and the tolerance drawn as a horizontal line.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    points = [
        (p.mean_saved * 100, p.mean_regret, p.label)
        for p in result.policies
        if p.mean_regret is not None
    ]
    if points:
        ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], s=18, color="C0")
        for x, y, lab in _front_labels(points):
            ax.annotate(lab, (x, y), fontsize=7, alpha=0.8, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
    rec = result.recommended
    if rec is not None and rec.mean_regret is not None:
        ax.scatter([rec.mean_saved * 100], [rec.mean_regret], s=120, marker="*", color="C3",
                   zorder=3, label=f"recommended: {rec.label}")  # fmt: skip
    ax.axhline(
        result.tolerance, color="grey", ls="--", lw=1, label=f"tolerance {result.tolerance:g}"
    )
    ax.set_xlabel("budget saved (% of evaluations, mean over curves)")
    ax.set_ylabel(f"mean regret on {result.monitor}")
    ax.set_title(f"stopping policies on {len(result.curves)} curve(s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    suffix = posixpath.splitext(path)[1].lstrip(".").lower() or "png"
    fig.savefig(path, format=suffix, dpi=110)
