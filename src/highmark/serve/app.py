"""The ``highmark serve`` web server: a read-only Starlette app run by uvicorn.

Routes (GET only; every other method is refused with 405):

* ``/``: the page (:func:`highmark.serve.page.render_live`);
* ``/assets/NAME``: the packaged script, styles and licence (:data:`~highmark.serve.page.ASSETS`);
* ``/api/runs``: ``{"root", "runs": [summary, ...]}``;
* ``/api/run?id=ID``: one run's summary, curves and checkpoints (404 for an unknown id: only
  runs found under the root are ever read);
* ``/api/events``: server-sent events; an event ``runs`` (the same JSON as ``/api/runs`` plus
  ``changed``, the ids that changed) at connection and after every change the feed sees.

A background task polls the runs (:class:`~highmark.serve.feed.RunFeed`) every ``interval``
seconds in a worker thread. Every response carries a Content-Security-Policy that allows the
page's own scripts, styles and API only. When bound to a loopback address the server answers only
requests addressed to a loopback name (guards against DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from highmark.serve.feed import RunFeed
from highmark.serve.page import ASSETS, LIVE_CSP, asset, render_live

__all__ = ["create_app", "is_loopback", "serve"]

logger = logging.getLogger(__name__)

_HEADERS = {
    "Content-Security-Policy": LIVE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _SecurityHeaders:
    """Adds :data:`_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class _Hub:
    """Polls the feed and fans each change out to the connected event streams."""

    def __init__(self, feed: RunFeed, interval: float) -> None:
        self.feed = feed
        self.interval = interval
        self.listeners: set[asyncio.Queue[str]] = set()

    def message(self, changed: list[str]) -> str:
        runs = self.feed.summaries()
        return json.dumps({"root": self.feed.root, "runs": runs, "changed": changed})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                changed = await asyncio.to_thread(self.feed.poll)
            except Exception:  # a bad poll must not end the feed: log, try again next time
                logger.exception("%s: polling the runs failed", self.feed.root)
                continue
            if changed:
                text = self.message(changed)
                for queue in list(self.listeners):
                    if queue.full():
                        queue.get_nowait()  # a slow client gets the newest state, not a backlog
                    queue.put_nowait(text)


def create_app(
    root: str, storage_options: Mapping[str, Any] | None = None, interval: float = 0.5,
    allowed_hosts: list[str] | None = None,
) -> Starlette:  # fmt: skip
    """The dashboard app for the runs at or under ``root`` (a run, a folder, an fsspec URL).

    Args:
        root: what to serve.
        storage_options: fsspec options for URLs.
        interval: seconds between two polls of the runs' files.
        allowed_hosts: the ``Host`` names answered (None: any).
    """
    feed = RunFeed(root, storage_options)
    hub = _Hub(feed, interval)

    async def page(request: Request) -> Response:
        return HTMLResponse(render_live())

    async def assets(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(asset(name), media_type=ASSETS[name])

    async def runs(request: Request) -> Response:
        return JSONResponse({"root": root, "runs": feed.summaries()})

    async def run(request: Request) -> Response:
        data = await asyncio.to_thread(feed.payload, request.query_params.get("id", ""))
        if data is None:
            return JSONResponse({"error": "no such run"}, status_code=404)
        return JSONResponse(data)

    async def events(request: Request) -> Response:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        queue.put_nowait(hub.message([]))
        hub.listeners.add(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    yield {"event": "runs", "data": await queue.get()}
            finally:
                hub.listeners.discard(queue)

        return EventSourceResponse(stream(), ping=15)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(feed.poll)
        task = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    routes = [
        Route("/", page),
        Route("/assets/{name}", assets),
        Route("/api/runs", runs),
        Route("/api/run", run),
        Route("/api/events", events),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def serve(
    root: str,
    host: str = "127.0.0.1",
    port: int = 8765,
    storage_options: Mapping[str, Any] | None = None,
    on_ready: Callable[[str], None] | None = None,
    interval: float = 0.5,
) -> None:
    """Serves the dashboard until interrupted; ``on_ready(url)`` is called once it listens.

    ``port=0`` picks a free port (the URL passed to ``on_ready`` names it).
    """
    import uvicorn

    allowed = _LOOPBACK_NAMES if is_loopback(host) else None
    app = create_app(root, storage_options, interval=interval, allowed_hosts=allowed)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"http://{shown}:{bound}/")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
