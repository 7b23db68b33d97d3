"""The web view as an aiohttp application: four pages, their `/api/...` JSON, and the vendored assets.

Pages are one HTML shell each; `static/app.js` fetches the JSON and draws tables, SVG charts
and the waterfall. The JSON comes from `ask.tools` and the query kinds, the functions behind
`coral-ebpf query` and `coral-ebpf mcp`, so a page never computes a figure of its own.
Everything is GET: nothing here changes the agent or its data.

Mount it on another app with `parent.add_subapp("/ui", build_ui_app(backend))`; links and
fetches are relative to wherever it is mounted.

Over a colony (a `FleetBackend`) the pages say so (`data-fleet`), every `/api/...` takes
`?agent=` (one agent, glob with *), `/api/agents` lists the agents, and the page script adds an
agent filter, per-agent columns and the colony's health.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from coral_ebpf.ask import tools
from coral_ebpf.ask.backend import Backend, FleetBackend
from coral_ebpf.errors import CoralError
from coral_ebpf.query.params import QueryError
from coral_ebpf.ui.auth import token_middleware
from coral_ebpf.units import parse_duration

BACKEND = web.AppKey("backend", Backend)
WINDOWS = ("5m", "15m", "1h", "6h", "1d")
TARGET_BUCKETS = 60
_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
_PAGE_TITLES = {"services": "Services", "service": "Service", "trace": "Trace", "health": "Health"}


def _asset(name: str) -> bytes:
    return resources.files("coral_ebpf.ui").joinpath("static", name).read_bytes()


def _base(request: web.Request) -> str:
    """Where this app is mounted ('' at the root, '/ui' under a parent's prefix)."""
    return str(request.app.router["services"].url_for()).rstrip("/")


def _page(page: str, argument: str = "") -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        value = request.match_info.get(argument, "") if argument else ""
        base = html.escape(_base(request), quote=True)
        fleet = isinstance(request.app[BACKEND], FleetBackend)
        brand = "coral-ebpf colony" if fleet else "coral-ebpf"
        title = html.escape(f"{_PAGE_TITLES[page]}{': ' + value if value else ''} — {brand}")
        body = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f'<title>{title}</title><link rel=stylesheet href="{base}/static/style.css"></head>'
            f'<body><nav><a href="{base}/">Services</a><a href="{base}/health">Health</a>'
            f"<span class=brand>{brand}</span></nav>"
            f'<main id=app data-page="{page}" data-base="{base}" data-fleet="{int(fleet)}" '
            f'data-arg="{html.escape(value, quote=True)}">'
            "<p class=loading>Loading…</p></main>"
            f'<script src="{base}/static/app.js"></script></body></html>'
        )
        return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})

    return handler


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=_ASSETS[name], headers={"Cache-Control": "max-age=300"})


def _window(request: web.Request, default: str = "1h") -> str:
    window = request.query.get("window", default)
    try:
        if parse_duration(window) <= 0:
            raise ValueError("must be greater than 0")
    except ValueError as exc:
        raise QueryError(f"window: {exc}") from None
    return window


def bucket_size(window: str) -> float:
    """Seconds per bucket so that a window gets about TARGET_BUCKETS (never under 10 s)."""
    return max(10.0, parse_duration(window) / TARGET_BUCKETS)


def _json_api(
    answer: Callable[[Backend, web.Request], dict[str, Any]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        backend = request.app[BACKEND]
        loop = asyncio.get_running_loop()
        try:
            document = await loop.run_in_executor(None, answer, backend, request)
        except QueryError as exc:
            return web.json_response({"error": exc.message, "hint": exc.hint}, status=400)
        except CoralError as exc:
            return web.json_response({"error": exc.message, "hint": exc.hint}, status=503)
        return web.json_response(document, dumps=lambda v: json.dumps(v, default=str))

    return handler


def _agent(request: web.Request) -> str | None:
    return request.query.get("agent") or None


def _services(backend: Backend, request: web.Request) -> dict[str, Any]:
    return tools.list_services(backend, window=_window(request), agent=_agent(request))


def _agents(backend: Backend, request: web.Request) -> dict[str, Any]:
    return tools.list_agents(backend)


def _red(backend: Backend, request: web.Request) -> dict[str, Any]:
    """RED over time for one service: `red_timeline` buckets overall and per route (or method)."""
    window = _window(request)
    protocol = request.query.get("protocol", "http")
    if protocol not in ("http", "grpc"):
        raise QueryError(f"protocol: {protocol!r} is not one of http, grpc")
    params: dict[str, Any] = {"since": window, "by": bucket_size(window), "group": "route"}
    if request.query.get("service"):
        params["service"] = request.query["service"]
    return backend.query(protocol, tools.scoped(backend, params, _agent(request)))


def _traces(backend: Backend, request: web.Request) -> dict[str, Any]:
    window = _window(request, "15m")
    service = request.query.get("service") or None
    agent = _agent(request)
    if request.query.get("which") == "failed":
        return tools.failed_traces(backend, service=service, window=window, limit=10, agent=agent)
    return tools.slow_traces(backend, service=service, window=window, limit=10, agent=agent)


def _trace(backend: Backend, request: web.Request) -> dict[str, Any]:
    return tools.get_trace(backend, request.match_info["trace_id"], max_spans=1000)


def _status(backend: Backend, request: web.Request) -> dict[str, Any]:
    return {"summary": tools.agent_status(backend), "status": backend.status()}


def build_ui_app(backend: Backend, *, token: str | None = None) -> web.Application:
    """The web view over `backend`; with `token`, every request must carry it (see ui.auth)."""
    app = web.Application(middlewares=[token_middleware(token)] if token else [])
    app[BACKEND] = backend
    app.router.add_get("/", _page("services"), name="services")
    app.router.add_get("/service/{service}", _page("service", "service"))
    app.router.add_get("/trace/{trace_id}", _page("trace", "trace_id"))
    app.router.add_get("/health", _page("health"))
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/services", _json_api(_services))
    app.router.add_get("/api/red", _json_api(_red))
    app.router.add_get("/api/traces", _json_api(_traces))
    app.router.add_get("/api/trace/{trace_id}", _json_api(_trace))
    app.router.add_get("/api/status", _json_api(_status))
    app.router.add_get("/api/agents", _json_api(_agents))
    return app
