"""The results: target checks, the JSON file and the Markdown table."""

from __future__ import annotations

import json
import os
from typing import Any

_HIDDEN = {"name", "unit", "min", "median", "max", "n", "samples"}


def _rows(results: dict[str, Any], figure: str) -> dict[str, dict[str, Any]]:
    fig = results["figures"].get(figure) or {}
    return {r["name"]: r for r in fig.get("rows", [])}


def _target(text: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"target": text, "measured": measured, "met": met}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks the issue's targets against the measured figures (those that ran)."""
    out: list[dict[str, Any]] = []
    save = _rows(results, "save")
    hm = save.get("highmark save (sync)")
    if hm:
        ratio = hm["limit_over_this_best"]
        out.append(
            _target(
                "Synchronous save >= 0.8 x the fsync write limit (best vs best)",
                f"{ratio:.2f} x ({hm['min']:.3f} s vs limit "
                f"{save['limit: write new file + fsync']['min']:.3f} s)",
                ratio >= 0.8,
            )
        )
        rivals = {
            k: save[k]["min"] for k in ("torch.save + fsync", "safetensors save_file + fsync")
        }
        fastest = min(rivals, key=rivals.__getitem__)
        out.append(
            _target(
                "Synchronous save no slower than the fastest of torch.save and safetensors",
                f"{hm['min'] / rivals[fastest]:.2f} x the time of {fastest} (best vs best; "
                f"median {hm['median'] / save[fastest]['median']:.2f} x)",
                hm["min"] <= rivals[fastest],
            )
        )
    block = _rows(results, "async").get("highmark save (async): blocking part")
    if block:
        frac = block["fraction_of_sync_median"]
        measured = (
            f"{100 * frac:.1f} % (median), {100 * block['fraction_of_sync_best']:.1f} % (best)"
        )
        limits = _rows(results, "limits")
        sync = _rows(results, "async").get("highmark save (sync)")
        for name, label in (
            ("copy into reused buffers", "floor (copy into reused buffers, 1 thread)"),
            ("copy into reused buffers, 2 threads", "2 threads"),
            ("copy as one buffer (one memmove)", "one memmove of all bytes"),
            ("copy as one buffer, 2 threads (a memmove each)", "two memmoves on 2 threads"),
        ):
            if name in limits and sync:
                measured += f"; {label} {100 * limits[name]['min'] / sync['min']:.1f} %"
        out.append(
            _target(
                "Async save blocks <= 15 % of the synchronous save time (async_save=True: "
                "the copy blocks)",
                measured,
                frac <= 0.15,
            )
        )
    deferred = _rows(results, "async").get("highmark save (deferred async): blocking part")
    fenced = _rows(results, "async").get("highmark save (deferred async): save + fence at once")
    sync_row = _rows(results, "async").get("highmark save (sync)")
    if deferred and fenced and sync_row:
        frac = deferred["fraction_of_sync_median"]
        out.append(
            _target(
                'Async save blocks <= 15 % of the synchronous save time (async_save="deferred":'
                " the copy runs behind a fence)",
                f"{100 * frac:.1f} % (median), {100 * deferred['fraction_of_sync_best']:.1f} % "
                f"(best); a state change right after the save waits for the copy: save + fence "
                f"{100 * fenced['median'] / sync_row['median']:.1f} % (median)",
                frac <= 0.15,
            )
        )
    restore = _rows(results, "restore")
    for name, text, floor in (
        (
            "highmark restore(into=live), verified",
            "Full restore into a live model, verified, >= 0.8 x the page-cache read limit",
            0.8,
        ),
        ("highmark restore() + touch", "Plain restore >= 0.5 x the page-cache read limit", 0.5),
    ):
        if name in restore:
            ratio = restore[name]["limit_over_this_best"]
            out.append(_target(text, f"{ratio:.2f} x (best vs best)", ratio >= floor))
    partial = results["figures"].get("partial")
    if partial and "model-only restore" in partial.get("bytes_read_cold", {}):
        b = partial["bytes_read_cold"]
        allowance = 1.02 * b["model tensors"] + (4 << 20)
        out.append(
            _target(
                "Partial restore reads only the bytes it needs",
                f"model-only restore read {b['model-only restore'] / 1e6:.1f} MB from a cold "
                f"cache for {b['model tensors'] / 1e6:.1f} MB of model tensors (full restore "
                f"{b['full restore'] / 1e6:.1f} MB)",
                b["model-only restore"] <= allowance,
            )
        )
    stop = _rows(results, "stopping")
    ours = stop.get("highmark EarlyStopping.update")
    if ours:
        others = [r for n, r in stop.items() if not n.startswith("highmark")]
        out.append(
            _target(
                "Stopper update < 5 us, faster than Keras' and Lightning's",
                f"{ours['min']:.2f} us (best); "
                + ", ".join(f"{r['name']}: {r['min']:.2f} us" for r in others),
                ours["min"] < 5 and all(ours["min"] < r["min"] for r in others),
            )
        )
    storage = results["figures"].get("storage")
    if storage and "checkpoints_worth" in storage:
        out.append(
            _target(
                "20 checkpoints with keep_best=3, keep_last=1 take 4 checkpoints' worth",
                f"{storage['checkpoints_worth']:.2f} checkpoints' worth on disk "
                f"(expected {storage['expected_checkpoints_worth']}: steps "
                f"{storage['expected_steps']}, kept {storage['kept_steps']})",
                storage["checkpoints_worth"] <= storage["expected_checkpoints_worth"] + 0.05
                and storage["kept_steps"] == storage["expected_steps"],
            )
        )
    memory = _rows(results, "memory")
    for name, text, limit in (
        ("highmark save (sync)", "Extra peak memory of a synchronous save <= 0.1 x state", 0.1),
        ("highmark save (async), 3 saves", "Extra peak memory of async saves <= 1.1 x state", 1.1),
        (
            "highmark restore(into=live)",
            "Extra peak memory of a restore into a live model <= 0.1 x state",
            0.1,
        ),
    ):
        if name in memory:
            r = memory[name]
            out.append(
                _target(
                    text,
                    f"{r['median']:.2f} x (median; heap {r['anon_median']:.2f} x, "
                    f"mapped page cache {r['file_mapped_median']:.2f} x)",
                    r["median"] <= limit,
                )
            )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 10_000:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown document: the targets, then one table per figure."""
    meta = results["meta"]
    st = meta["state"]
    lines = [
        f"# highmark benchmarks - {meta['size']} state, {meta['started']}",
        "",
        f"State: {st['bytes'] / 1e6:.1f} MB in {st['tensors']} float32 tensors "
        f"({st['model']}; model {st['model_bytes'] / 1e6:.1f} MB + Adam state). "
        f"{meta['repeat']} measured rounds per figure (after a warm-up round), methods "
        f"interleaved in shuffled order. Machine: {meta['machine']}. torch {meta['torch']} "
        f"({meta['torch_threads']} thread), safetensors {meta['safetensors']}. "
        f"Took {meta['seconds']:.0f} s.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    for key, fig in results["figures"].items():
        lines += ["", f"## {fig.get('title', key)}", ""]
        if fig.get("skipped"):
            lines += [f"Skipped: {fig['skipped']}", ""]
        if fig.get("error"):
            lines += [f"Failed: `{fig['error']}`", ""]
        rows = fig.get("rows") or []
        if rows:
            extras = [k for k in rows[0] if k not in _HIDDEN]
            for r in rows[1:]:
                extras += [k for k in r if k not in _HIDDEN and k not in extras]
            head = ["method", "unit", "min", "median", "max", *extras]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---|" * len(head))
            for r in rows:
                cells = [r["name"], r["unit"], *(_fmt(r.get(k, "-")) for k in head[2:])]
                lines.append("| " + " | ".join(cells) + " |")
        rest = {k: v for k, v in fig.items() if k not in ("title", "rows", "skipped", "error")}
        if rest:
            lines += ["", "```json", json.dumps(rest, indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: str, stem: str) -> tuple[str, str]:
    """Writes ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, f"{stem}.json")
    mpath = os.path.join(out_dir, f"{stem}.md")
    with open(jpath, "w") as f:
        json.dump(results, f, indent=1, default=str)
        f.write("\n")
    with open(mpath, "w") as f:
        f.write(markdown(results))
    return jpath, mpath
