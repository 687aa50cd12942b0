"""The live dashboard of ``highmark serve`` and the page ``highmark report`` shares with it.

Modules (imported only by the command line and the report):

* :mod:`~highmark.serve.runs`: finding runs under a folder or URL, reading one read-only;
* :mod:`~highmark.serve.payload`: what the page shows of a run (summary row, curves, marks);
* :mod:`~highmark.serve.feed`: which runs changed, by polling their files' signatures;
* :mod:`~highmark.serve.page`: the HTML page, live or static, and its packaged assets;
* :mod:`~highmark.serve.app`: the Starlette app and its uvicorn server (the ``serve`` extra).

Nothing here writes to a run. Only :mod:`~highmark.serve.app` needs starlette, uvicorn and
sse-starlette; the report needs none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from highmark.errors import ConfigError

__all__ = ["start"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "highmark serve needs its extra: pip install 'highmark[serve]'"


def start(
    root: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Serves the dashboard of ``root`` until interrupted (what ``highmark serve`` runs).

    ``say`` receives the lines a person should read (the URL, a warning for a non-loopback
    address); the library itself only logs.

    Raises:
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is False, or the
            ``serve`` extra is not installed, or ``root`` is neither a run nor a folder.
    """
    try:
        from highmark.serve.app import is_loopback, serve
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} (missing: {exc.name})") from exc
    from highmark.serve.runs import discover

    if not is_loopback(host):
        if not allow_remote:
            raise ConfigError(
                f"--host {host} lets other machines read every run under {root}: pass "
                "--allow-remote as well to mean it, or leave --host out (127.0.0.1)"
            )
        message = (
            f"warning: serving on {host}: anyone who can reach this machine can read these runs "
            "(no authentication, no TLS)"
        )
        (say or logger.warning)(message)
    discover(root, storage_options)  # a wrong path fails here, with its name, before binding
    show = say or (lambda line: logger.info("%s", line))
    serve(
        root, host, port, storage_options,
        on_ready=lambda url: show(f"highmark serve: {url}  (read-only; Ctrl-C stops)"),
    )  # fmt: skip
