"""The dashboard page: one HTML shell and its assets, served live or written as a static report.

Both modes run the same script (``assets/dashboard.js``) and charting library (uPlot, MIT,
shipped in ``assets/`` with its licence; no network needed). Live (``highmark serve``), the page
loads its assets from the server and its data from ``/api/*``, with a change feed by server-sent
events. Static (``highmark report``), the assets are inlined and the data embedded as a JSON
block; the page's Content-Security-Policy then allows exactly those inline scripts and styles
(by their SHA-256) and nothing else: no network, no other script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["ASSETS", "LIVE_CSP", "asset", "render_live", "render_static"]

#: The files served under ``/assets/``: name -> media type.
ASSETS = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_SCRIPTS = ("uPlot.iife.min.js", "dashboard.js")
_STYLES = ("uPlot.min.css", "dashboard.css")

#: The policy of the live page: its own scripts, styles and API only.
LIVE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def asset(name: str) -> bytes:
    """The bytes of one packaged asset (a name of :data:`ASSETS`)."""
    if name not in ASSETS:
        raise KeyError(name)
    return resources.files("highmark.serve").joinpath("assets").joinpath(name).read_bytes()


def _sha(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _json_block(data: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _body(title: str, mode: str, meta: str) -> str:
    return (
        f'<body data-mode="{mode}"><header><h1>{html.escape(title)}</h1>'
        f'<p class="meta" id="meta">{html.escape(meta)}</p>'
        '<p class="live" id="live" hidden></p></header>'
        '<section><h2>Runs</h2><table id="runs"><thead></thead><tbody></tbody></table>'
        '<p class="hint">Tick runs to plot them. Drag on a chart to zoom, double-click to reset; '
        "the legend shows the values under the cursor.</p></section>"
        '<section id="curves"><h2>Learning curves</h2><div id="controls"></div>'
        '<div id="charts"></div></section>'
        '<section id="checkpoints"><h2>Checkpoints</h2><div id="ckpt"></div></section>'
    )


def render_live(title: str = "highmark serve") -> str:
    """The page of ``highmark serve`` (assets and data come from the server)."""
    links = "".join(f'<link rel="stylesheet" href="assets/{s}">' for s in _STYLES)
    scripts = "".join(f'<script src="assets/{s}" defer></script>' for s in _SCRIPTS)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title>{links}{scripts}</head>"
        + _body(title, "live", "connecting…")
        + "</body></html>\n"
    )


def render_static(
    runs: Sequence[Mapping[str, Any]],
    title: str = "highmark report",
    meta: str = "",
    extra: str = "",
) -> str:
    """A self-contained report: the same page with its assets inlined and ``runs`` (payloads of
    :func:`highmark.serve.payload.run_payload`) embedded; ``extra`` is HTML appended to the body.
    """
    styles = [asset(s).decode("utf-8") for s in _STYLES]
    scripts = [asset(s).decode("utf-8") for s in _SCRIPTS]
    csp = (
        "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'; "
        f"script-src {' '.join(_sha(s) for s in scripts)}; "
        f"style-src {' '.join(_sha(s) for s in styles)}"
    )
    data = _json_block({"title": title, "runs": list(runs)})
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title>"
        + "".join(f"<style>{s}</style>" for s in styles)
        + _body(title, "static", meta)
        + f'<script type="application/json" id="hm-data">{data}</script>'
        + "".join(f"<script>{s}</script>" for s in scripts)
        + extra
        + "</body></html>\n"
    )
