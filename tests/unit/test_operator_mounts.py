"""The web view mounted on the operator listener: under /ui/, behind the listener's token.

A real `OperatorServer` on a loopback port with a token file: /metrics takes the bearer header
only; under /ui/ a browser may bring the token once as ?token= and then carries it as a cookie.
"""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.telemetry.exposition import MetricFamily
from coral_ebpf.telemetry.server import TOKEN_COOKIE, OperatorServer
from coral_ebpf.telemetry.settings import TelemetrySettings
from coral_ebpf.telemetry.source import Health
from coral_ebpf.ui.app import build_ui_app

TOKEN = "a-long-enough-random-token"


class Source:
    def collect(self) -> Sequence[MetricFamily]:
        return []

    def healthy(self) -> Health:
        return Health(True, "ok")

    def ready(self) -> Health:
        return Health(True, "ready")


class Backend:
    def query(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"items": [], "kind": kind}

    def status(self) -> dict[str, Any]:
        return {"agent": {"running": True, "pid": 1}}


def serve(tmp_path: Path, token: bool) -> OperatorServer:
    token_file = None
    if token:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
    settings = TelemetrySettings(endpoint="127.0.0.1:0", token_file=token_file)
    server = OperatorServer(settings, Source(), mounts={"/ui": build_ui_app(Backend())})
    server.start()
    return server


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[str]:
    server = serve(tmp_path, token=True)
    try:
        yield f"http://{server.address}"
    finally:
        server.stop(5)


def get(url: str, opener: urllib.request.OpenerDirector | None = None, **headers: str) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=10) as response:
            return int(response.status), response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def test_open_on_loopback_without_a_token(tmp_path: Path) -> None:
    server = serve(tmp_path, token=False)
    try:
        base = f"http://{server.address}"
        code, page, _ = get(f"{base}/ui/")
        assert code == 200 and 'data-base="/ui"' in page and 'src="/ui/static/app.js"' in page
        assert get(f"{base}/ui")[0] == 200  # redirected to /ui/
        assert get(f"{base}/ui/api/status")[0] == 200
        assert get(f"{base}/metrics")[0] == 200
        assert server.status()["mounts"] == ["/ui/"]
        code, text, _ = get(f"{base}/nothing")
        assert code == 404 and "/ui/" in text
        post = urllib.request.Request(f"{base}/ui/api/services", method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=10)
        assert refused.value.code == 405
    finally:
        server.stop(5)


def test_the_listener_token_guards_the_view(guarded: str) -> None:
    assert get(f"{guarded}/ui/")[0] == 401
    assert get(f"{guarded}/ui/api/status")[0] == 401
    assert get(f"{guarded}/ui/api/status", Authorization="Bearer nope")[0] == 401
    assert get(f"{guarded}/ui/api/status?token=nope")[0] == 401
    assert get(f"{guarded}/ui/api/status", Authorization=f"Bearer {TOKEN}")[0] == 200


def test_a_browser_brings_the_token_once_then_carries_the_cookie(guarded: str) -> None:
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    code, _, headers = get(f"{guarded}/ui/?token={TOKEN}", browser)
    assert code == 200
    cookie = headers["Set-Cookie"]
    assert TOKEN_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert get(f"{guarded}/ui/api/status", browser)[0] == 200  # the page's own fetches
    assert get(f"{guarded}/ui/health", browser)[0] == 200


def test_metrics_take_the_bearer_header_only(guarded: str) -> None:
    assert get(f"{guarded}/metrics?token={TOKEN}")[0] == 401
    assert get(f"{guarded}/metrics", Cookie=f"{TOKEN_COOKIE}={TOKEN}")[0] == 401
    assert get(f"{guarded}/metrics", Authorization=f"Bearer {TOKEN}")[0] == 200


def test_a_mount_prefix_is_a_plain_name() -> None:
    settings = TelemetrySettings(endpoint="127.0.0.1:0")
    with pytest.raises(ValueError, match="prefix"):
        OperatorServer(settings, Source(), mounts={"/ui/": build_ui_app(Backend())})
