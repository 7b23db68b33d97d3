"""The web view in a real browser: headless Chromium loads every page from a real `coral-ebpf start`
(fed through OTLP/HTTP), where the agent serves the view under /ui/ on its operator listener
(telemetry.endpoint), checks the numbers shown against `coral-ebpf query ... --json`, and keeps
screenshots at 1280x800 and 400 px wide (their folder is printed). `coral-ebpf ui`, the view on
its own endpoint, is checked for its loopback and token rules.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agent_process import CLI, REPO, AgentProcess, call_failed, running_agent
from tests.helpers.known_data import FAILED_TRACE, SLOW_TRACE, feed
from tests.helpers.processes import free_port, stop_process
from tests.helpers.timing import eventually

SETTINGS = {"storage": {"flush_interval": "200ms"}, "red": {"export_interval": "1s"}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
)
VIEWPORTS = {"wide": (1280, 800), "narrow": (400, 800)}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make system-deps)")


def answers(url: str) -> int:
    """The HTTP status `url` answers with, 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = AgentProcess(tmp_path_factory.mktemp("agent-ui"), SETTINGS)
    try:
        running.start()
        feed(running.http_address())
        running.query_until("http", "shop", lambda rows: sum(r["requests"] for r in rows) == 100, timeout=60)
        yield running
        running.stop()
    finally:
        running.kill()


@contextlib.contextmanager
def ui_server(agent: AgentProcess, *args: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [*CLI, "ui", "--config", str(agent.config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        yield process
    finally:
        stop_process(process, 10)


@pytest.fixture(scope="module")
def ui(agent: AgentProcess) -> str:
    """The web view's base URL on the agent's operator listener."""
    base = f"http://{agent.telemetry_address()}/ui"
    eventually(lambda: answers(f"{base}/"), 30, "the ui to answer", until=lambda code: code == 200)
    return base


@pytest.fixture(autouse=True)
def _agent_log_on_failure(request: pytest.FixtureRequest, agent: AgentProcess) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(agent.log_tail(150))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-screenshots")
    print(f"\nscreenshots: {folder}")
    return folder


def browse(url: str, profile: Path, *extra: str, window: tuple[int, int] = VIEWPORTS["wide"]) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def page_dom(url: str, tmp_path: Path) -> str:
    dom = browse(url, tmp_path / "profile-dom", "--dump-dom")
    assert 'data-ready="1"' in dom, dom[-3000:]
    assert 'id="error"' not in dom, dom[-3000:]
    return dom


def screenshots(url: str, name: str, shots: Path, tmp_path: Path) -> None:
    for label, window in VIEWPORTS.items():
        path = shots / f"{name}-{label}.png"
        browse(url, tmp_path / f"profile-{label}", f"--screenshot={path}", window=window)
        assert path.stat().st_size > 5000, f"{path} looks empty"
        print(f"screenshot: {path}")


def cells(dom: str, table_id: str) -> list[list[str]]:
    """The text of each body cell of table `table_id`, row by row."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', dom, re.S)
    assert table, f"no table {table_id}"
    body = table.group(1).split("<tbody>", 1)[1]
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def format_ms(value: float | None) -> str:
    from coral_ebpf.cli.query_output import format_ms as cli_format

    return cli_format(value)


def test_services_page(agent: AgentProcess, ui: str, shots: Path, tmp_path: Path) -> None:
    url = f"{ui}/?window=1h"
    # The agent may list itself too (its built-in engine watches this host): look at shop.
    (row,) = [row for row in cells(page_dom(url, tmp_path), "services") if row[0] == "shop"]
    (cli,) = agent.cli_json("query", "http", "--service", "shop", "--since", "1h")
    assert row == [
        "shop",
        "http",
        str(cli["requests"]),
        f"{cli['rate_per_s']:.2f}",
        f"{cli['error_rate'] * 100:.2f}%",
        format_ms(cli["p50_ms"]),
        format_ms(cli["p95_ms"]),
        format_ms(cli["p99_ms"]),
        "beyla",
        "1",
    ]
    assert row[2] == "100" and row[4] == "10.00%"
    screenshots(url, "services", shots, tmp_path)


def test_service_page(agent: AgentProcess, ui: str, shots: Path, tmp_path: Path) -> None:
    url = f"{ui}/service/shop?window=1h"
    dom = page_dom(url, tmp_path)
    timeline = agent.cli_json("query", "http", "--service", "shop", "--since", "1h", "--by", "1m")
    assert sum(b["requests"] for b in timeline["buckets"]) == 100
    assert "100 requests, 10 errors in 60 buckets of 60s" in dom
    assert dom.count("<svg") == 8, "four charts for the service, four for its one route"
    assert "GET /items — 100 requests" in dom
    slow = cells(dom, "slow")
    assert [row[2] for row in slow] == [format_ms(900.0), format_ms(40.0)]
    assert f'href="/ui/trace/{SLOW_TRACE.hex()}"' in dom
    (failed,) = cells(dom, "failed")
    assert failed[4] == "ERROR" and f'href="/ui/trace/{FAILED_TRACE.hex()}"' in dom
    screenshots(url, "service", shots, tmp_path)


def test_trace_page(agent: AgentProcess, ui: str, shots: Path, tmp_path: Path) -> None:
    url = f"{ui}/trace/{SLOW_TRACE.hex()}"
    dom = page_dom(url, tmp_path)
    trace = agent.cli_json("query", "traces", "--trace-id", SLOW_TRACE.hex(), "--format", "waterfall")
    assert f"{format_ms(trace['duration_ms'])} · 2 spans · OK · shop" in dom
    bars = re.findall(r'class="bar" style="left:([\d.]+)%;width:([\d.]+)%"', dom)
    expected = [(100 * s["offset_ms"] / 900.0, 100 * s["duration_ms"] / 900.0) for s in trace["spans"]]
    assert len(bars) == len(expected) == 2
    for (left, width), (want_left, want_width) in zip(bars, expected, strict=True):
        assert float(left) == pytest.approx(want_left, abs=1e-3)
        assert float(width) == pytest.approx(want_width, abs=1e-3)
    assert "+5.0ms 700ms" in dom and "padding-left:14px" in dom
    details = {row[0]: row[1] for row in cells(dom, "detail-table")}  # the root span is selected first
    assert (details["duration"], details["kind"], details["http.status_code"]) == ("900ms", "SERVER", "200")
    assert "http.route" in dom and "/api/users/{id}" in dom
    screenshots(url, "trace", shots, tmp_path)


def test_health_page(agent: AgentProcess, ui: str, shots: Path, tmp_path: Path) -> None:
    url = f"{ui}/health"
    dom = page_dom(url, tmp_path)
    status = agent.cli_json("status")
    assert f"Agent running: pid {status['agent']['pid']}" in dom
    parts = {row[0]: row[1] for row in cells(dom, "parts")}
    assert parts == {name: body["state"] for name, body in status.items() if isinstance(body, dict) and "state" in body}
    verdicts = {row[0]: row[1] for row in cells(dom, "verdicts")}
    assert verdicts == status["probe"].get("summary", {})
    beyla = {row[0]: row[1] for row in cells(dom, "beyla")}
    assert beyla["state"] == status["beyla"]["state"]
    screenshots(url, "health", shots, tmp_path)


def test_pages_are_read_only_and_api_errors_are_precise(ui: str) -> None:
    request = urllib.request.Request(f"{ui}/api/services", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(f"{ui}/api/services?window=soon", timeout=5)
    assert bad.value.code == 400 and b"window" in bad.value.read()


def test_off_loopback_needs_a_token(agent: AgentProcess, tmp_path: Path) -> None:
    port = free_port()
    refused = subprocess.run(
        [*CLI, "ui", "--config", str(agent.config_path), "--endpoint", f"0.0.0.0:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "--token-file" in refused.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with ui_server(agent, "--endpoint", f"0.0.0.0:{port}", "--token-file", str(token_file)):
        base = f"http://127.0.0.1:{port}"
        without_token = eventually(lambda: answers(f"{base}/api/status"), 30, "the ui to answer", until=bool)
        assert without_token == 401
        request = urllib.request.Request(f"{base}/api/status", headers={"Authorization": "Bearer s3cret-token"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        with urllib.request.urlopen(f"{base}/?token=s3cret-token", timeout=5) as first_visit:
            assert "HttpOnly" in first_visit.headers["Set-Cookie"]


def test_the_view_sits_behind_the_listener_token(tmp_path: Path) -> None:
    token = "a-long-enough-random-token"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    settings = {**SETTINGS, "telemetry": {"endpoint": "127.0.0.1:0", "token_file": str(token_file)}}
    with running_agent(tmp_path / "agent", settings) as served:
        feed(served.http_address())
        served.query_until("http", "shop", lambda rows: sum(r["requests"] for r in rows) == 100, timeout=60)
        base = f"http://{served.telemetry_address()}/ui"
        assert answers(f"{base}/api/services?window=1h") == 401
        assert answers(f"{base}/") == 401
        request = urllib.request.Request(f"{base}/api/services?window=1h", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            (shop,) = [s for s in json.load(response)["items"] if s["service"] == "shop"]
        (cli,) = served.cli_json("query", "http", "--service", "shop", "--since", "1h")
        assert (shop["requests"], shop["errors"], shop["p99_ms"]) == (cli["requests"], cli["errors"], cli["p99_ms"])
        # A browser brings the token once; the cookie it gets back carries the page's own fetches.
        dom = page_dom(f"{base}/?window=1h&token={token}", tmp_path)
        assert any(row[0] == "shop" and row[2] == "100" for row in cells(dom, "services"))
        status = served.status()
        assert status["telemetry"]["mounts"] == ["/ui/"] and "ui" not in status
        assert f"web view http://{served.telemetry_address()}/ui/" in served.cli("status", columns=250).stdout


def test_ui_enabled_false_leaves_only_metrics_and_health(tmp_path: Path) -> None:
    with running_agent(tmp_path / "agent", {**SETTINGS, "ui": {"enabled": False}}) as served:
        base = f"http://{served.telemetry_address()}"
        assert answers(f"{base}/ui/") == 404
        assert answers(f"{base}/-/healthy") == 200
        assert served.status()["telemetry"]["mounts"] == []
