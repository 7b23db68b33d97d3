"""The token the web view asks for when it listens beyond loopback.

A request is let in when it carries the token as `Authorization: Bearer <token>`, as the
`coral_ui_token` cookie, or as `?token=` (a browser's first visit; the answer then sets the
cookie, HttpOnly and SameSite=Strict, so the page's own fetches carry it). Comparisons are
constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

COOKIE = "coral_ui_token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _presented(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip()
    return request.query.get("token") or request.cookies.get(COOKIE, "")


def token_middleware(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not hmac.compare_digest(_presented(request).encode(), expected):
            raise web.HTTPUnauthorized(text="coral-ebpf ui: a token is required (?token=, or Authorization: Bearer)")
        response = await handler(request)
        if request.query.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return check
