"""`OperatorServer`: the operator HTTP listener on aiohttp, in a thread of its own.

Routes: `GET /metrics` (OpenMetrics when the `Accept` header asks for it, else the Prometheus
0.0.4 text format; gzip when accepted), `GET /-/healthy` and `GET /-/ready` (200 or 503 with a
one-line plain-text reason). Collection and rendering run on a worker thread so a large scrape
never holds up a health check. Other aiohttp applications can be mounted under a prefix
(`mounts`: the agent mounts the read-only web view under `/ui/`); they sit behind the same
TLS and token.

Secure by default: on a loopback address it serves plain HTTP; anywhere else it refuses to
start unless TLS (`tls_cert`, `tls_key`) and a bearer token (`token_file`, mode 0600 or
stricter) are configured. A token or TLS configured on loopback is honoured too. A mounted
application is for browsers, which cannot send a bearer header: under its prefix the token may
also come once as `?token=`, and the answer sets it as a cookie (HttpOnly, SameSite=Strict,
Secure under TLS, scoped to the prefix) that the pages' own requests then carry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import ssl
import stat
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from coral_ebpf.errors import ConfigError, CoralError
from coral_ebpf.loop_thread import LoopThread
from coral_ebpf.state import PartState
from coral_ebpf.telemetry.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    render,
    wants_openmetrics,
)
from coral_ebpf.telemetry.settings import TelemetrySettings
from coral_ebpf.telemetry.source import Health, TelemetrySource
from coral_ebpf.units import is_loopback_host, parse_endpoint

log = logging.getLogger(__name__)

_PLAIN = "text/plain; charset=utf-8"
TOKEN_COOKIE = "coral_token"


def read_token(path: Path) -> str:
    """The bearer token in `path`, which must be a regular file no one but its owner can read."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"telemetry.token_file {path}: {exc.strerror or exc}", "create it with mode 0600") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"telemetry.token_file {path} is not a regular file", "point it at a file, not a link")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"telemetry.token_file {path} has mode {stat.S_IMODE(info.st_mode):04o}: others could read the token",
            f"chmod 600 {path}",
        )
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(f"telemetry.token_file {path} is empty", "write the bearer token into it")
    return token


def _tls_context(settings: TelemetrySettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError("telemetry.tls_cert and telemetry.tls_key go together", "set both, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"telemetry: cannot load the TLS certificate {settings.tls_cert} / key {settings.tls_key}: {exc}",
            "check both paths and that the key matches the certificate",
        ) from None
    return context


class OperatorServer:
    """The operator listener (a `Component`). `name` lets the colony register it under its own part name.

    `mounts` maps a prefix (`/ui`) to an aiohttp application served under it, read-only GETs
    only, behind this listener's TLS and token (see the module's docstring for browsers).
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        source: TelemetrySource,
        name: str = "telemetry",
        mounts: Mapping[str, web.Application] | None = None,
    ) -> None:
        if settings.endpoint is None:
            raise ValueError("OperatorServer needs an endpoint (an empty telemetry.endpoint disables it)")
        self.name = name
        self.settings = settings
        self.mounts = dict(mounts or {})
        for prefix in self.mounts:
            if not prefix.startswith("/") or prefix.endswith("/") or prefix in ("/metrics", "/-"):
                raise ValueError(f"mount prefix {prefix!r}: give it as /name, without a trailing slash")
        self.endpoint = settings.endpoint
        self._source = source
        host, _port = parse_endpoint(self.endpoint)
        self._tls = _tls_context(settings)
        self._token = read_token(settings.token_file) if settings.token_file is not None else None
        if not is_loopback_host(host) and (self._tls is None or self._token is None):
            raise ConfigError(
                f"telemetry.endpoint {self.endpoint} is not a loopback address: serving metrics off-host needs "
                "TLS and a bearer token",
                "set telemetry.tls_cert, telemetry.tls_key and telemetry.token_file, or listen on 127.0.0.1",
            )
        self._loop_thread = LoopThread(f"{self.name}-loop")
        self._runner: web.AppRunner | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._state = PartState.CREATED
        self._since = time.time()
        self.address: str | None = None
        self.scrapes = 0
        self.unauthorized = 0
        self.last_scrape_ms: float | None = None
        self.last_scrape_cpu_ms: float | None = None
        self.last_scrape_bytes = 0
        self.scrape_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        host, port = parse_endpoint(self.endpoint)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{self.name}-http")
        try:
            self.address = self._loop_thread.start(partial(self._listen, host, port))
        except OSError as exc:
            self._executor.shutdown(wait=False)
            raise CoralError(
                f"cannot listen for operators (/metrics) on {self.endpoint}: {exc.strerror or exc}",
                "free the port, or set telemetry.endpoint to another host:port (empty disables it)",
            ) from None
        self._state, self._since = PartState.RUNNING, time.time()
        log.info(
            "operator listener serving",
            extra={"fields": {"address": self.address, "tls": self._tls is not None, "token": self._token is not None}},
        )

    def stop(self, timeout: float) -> None:
        if not self._loop_thread.running:
            return
        if not self._loop_thread.stop(self._shutdown, timeout):
            log.warning("operator listener did not shut down in time")
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._runner = self._executor = None
        self._state, self._since = PartState.STOPPED, time.time()

    async def _listen(self, host: str, port: int) -> str:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        for prefix, mounted in self.mounts.items():
            app.router.add_get(prefix, self._to_slash)
            app.add_subapp(prefix, mounted)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self._tls, reuse_port=False)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        return f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- requests ----------------------------------------------------------------------------

    def _mount_of(self, path: str) -> str | None:
        """The mount prefix `path` falls under, if any."""
        for prefix in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    def _presented(self, request: web.Request, mount: str | None) -> tuple[str, bool]:
        """The token the request carries, and whether it came as `?token=` (to be set as a cookie)."""
        given = request.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer":
            return credentials.strip(), False
        if mount is None:  # /metrics and health: the bearer header only
            return "", False
        if "token" in request.query:
            return request.query["token"], True
        return request.cookies.get(TOKEN_COOKIE, ""), False

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        mount = self._mount_of(request.path)
        from_query = False
        if self._token is not None:
            presented, from_query = self._presented(request, mount)
            if not hmac.compare_digest(presented.encode(), self._token.encode()):
                self.unauthorized += 1
                where = " (in a browser: ?token=<token> once)" if mount is not None else ""
                return web.Response(
                    status=401,
                    text=f"a bearer token is required (Authorization: Bearer <token from telemetry.token_file>)"
                    f"{where}\n",
                    headers={"WWW-Authenticate": 'Bearer realm="coral-ebpf"'},
                )
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            places = ", ".join(["/metrics", "/-/healthy", "/-/ready", *(f"{p}/" for p in self.mounts)])
            return web.Response(status=404, text=f"nothing at {request.path}: try {places}\n")
        if from_query and mount is not None and self._token is not None:
            response.set_cookie(
                TOKEN_COOKIE,
                self._token,
                path=mount + "/",
                httponly=True,
                samesite="Strict",
                secure=self._tls is not None,
            )
        return response

    async def _to_slash(self, request: web.Request) -> web.StreamResponse:
        location = request.path + "/" + (f"?{request.query_string}" if request.query_string else "")
        raise web.HTTPFound(location)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self._executor, self._scrape, openmetrics, gzipped)
        except Exception as exc:  # a collector bug must not take the listener down
            self.scrape_errors += 1
            log.exception("collecting /metrics failed")
            return web.Response(status=500, text=f"collecting metrics failed: {exc}\n")
        response = web.Response(body=body)
        response.headers["Content-Type"] = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return response

    def _scrape(self, openmetrics: bool, gzipped: bool) -> bytes:
        started, cpu_started = time.perf_counter(), time.thread_time()
        body = render(self._source.collect(), openmetrics=openmetrics).encode()
        if gzipped:
            # One deflate pass writing the gzip container (wbits 31); level 1: ~45x smaller already.
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
        self.scrapes += 1
        self.last_scrape_ms = (time.perf_counter() - started) * 1000
        self.last_scrape_cpu_ms = (time.thread_time() - cpu_started) * 1000
        self.last_scrape_bytes = len(body)
        return body

    async def _health(self, verdict: Callable[[], Health]) -> web.Response:
        loop = asyncio.get_running_loop()
        try:
            health = await loop.run_in_executor(self._executor, verdict)
        except Exception as exc:
            health = Health(False, f"health check failed: {exc}")
        return web.Response(status=200 if health.ok else 503, text=health.reason + "\n", content_type="text/plain")

    async def _healthy(self, _request: web.Request) -> web.Response:
        return await self._health(self._source.healthy)

    async def _ready(self, _request: web.Request) -> web.Response:
        return await self._health(self._source.ready)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "state": self._state,
            "since": self._since,
            "endpoint": self.endpoint,
            "address": self.address,
            "tls": self._tls is not None,
            "token": self._token is not None,
            "mounts": [f"{prefix}/" for prefix in self.mounts],
            "scrapes": self.scrapes,
            "scrape_errors": self.scrape_errors,
            "unauthorized": self.unauthorized,
            "last_scrape_ms": None if self.last_scrape_ms is None else round(self.last_scrape_ms, 1),
            "last_scrape_cpu_ms": None if self.last_scrape_cpu_ms is None else round(self.last_scrape_cpu_ms, 1),
            "last_scrape_bytes": self.last_scrape_bytes,
        }
