"""The web view served by the colony: headless Chromium loads every page from a real colony (polling
two real agents fed by OTLP senders) under /ui/ on its operator listener, behind the listener's
token, checks the numbers and the per-agent columns against `coral-ebpf query --colony ... --json`
and `colony status --json`, and keeps screenshots at 1280x800 and 400 px wide (folder printed).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.agent_process import call_failed, run_cli
from tests.helpers.fleet import TwoAgentFleet
from tests.integration.test_ui import CHROMIUM, answers, cells, format_ms, page_dom, screenshots

TOKEN = "colony-view-token-0123456789"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make system-deps)")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoAgentFleet]:
    root = tmp_path_factory.mktemp("ui-colony")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    settings = {"telemetry": {"endpoint": "127.0.0.1:0", "token_file": str(token_file)}}
    with TwoAgentFleet(root, settings).running() as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest, fleet: TwoAgentFleet) -> Iterator[None]:
    yield
    if call_failed(request.node):
        print(fleet.log_tails())


@pytest.fixture(scope="module")
def ui(fleet: TwoAgentFleet) -> str:
    return f"http://{fleet.colony.status()['telemetry']['address']}/ui"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-colony-screenshots")
    print(f"\nscreenshots: {folder}")
    return folder


def with_token(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}token={TOKEN}"


def colony_query(fleet: TwoAgentFleet, *args: str) -> Any:
    return fleet.colony.query(*args)


def test_services_page_shows_each_agent(fleet: TwoAgentFleet, ui: str, shots: Path, tmp_path: Path) -> None:
    url = with_token(f"{ui}/?window=1h")
    dom = page_dom(url, tmp_path)
    rows = {row[0]: row for row in cells(dom, "services")}
    shop = colony_query(fleet, "http", "--service", "shop")["overall"]
    assert rows["shop"][:3] == ["shop", "http", str(shop["requests"])] and shop["requests"] == 75
    assert rows["shop"][4:] == [
        f"{shop['error_rate'] * 100:.2f}%",
        format_ms(shop["p50_ms"]),
        format_ms(shop["p95_ms"]),
        format_ms(shop["p99_ms"]),
        "2",
        "alpha 55 · beta 20",
    ]
    assert rows["cart"][2] == "7" and rows["cart"][-2:] == ["1", "beta 7"]
    assert 'data-fleet="1"' in dom and "coral-ebpf colony" in dom
    picker = re.search(r'<select id="agent".*?</select>', dom, re.S)
    assert picker and re.findall(r'<option value="(\w*)"', picker.group(0)) == ["", "alpha", "beta"]
    screenshots(url, "colony-services", shots, tmp_path)


def test_the_agent_filter_narrows_every_page(fleet: TwoAgentFleet, ui: str, shots: Path, tmp_path: Path) -> None:
    url = with_token(f"{ui}/?window=1h&agent=beta")
    rows = {row[0]: row for row in cells(page_dom(url, tmp_path), "services")}
    assert {name: row[2] for name, row in rows.items()} == {"shop": "20", "cart": "7"}
    assert rows["shop"][-1] == "beta 20"
    dom = page_dom(with_token(f"{ui}/service/shop?window=1h&agent=alpha"), tmp_path)
    assert "55 requests, 5 errors in 60 buckets of 60s" in dom
    assert [row[0] for row in cells(dom, "by-agent")] == ["alpha"]
    screenshots(url, "colony-services-beta", shots, tmp_path)


def test_service_page_breaks_down_by_agent(fleet: TwoAgentFleet, ui: str, shots: Path, tmp_path: Path) -> None:
    url = with_token(f"{ui}/service/shop?window=1h")
    dom = page_dom(url, tmp_path)
    assert "75 requests, 5 errors in 60 buckets of 60s" in dom
    expected = colony_query(fleet, "http", "--service", "shop")["by_agent"]
    assert cells(dom, "by-agent") == [
        [e["agent"], str(e["requests"]), str(e["errors"]), *(format_ms(e[k]) for k in ("p50_ms", "p95_ms", "p99_ms"))]
        for e in expected
    ]
    traces = {t["trace_id"]: t for t in colony_query(fleet, "traces", "--service", "shop", "--limit", "100")}
    slow = cells(dom, "slow")
    assert len(slow) == len(traces) == 5 and {row[-1] for row in slow} == {"alpha", "beta"}
    (failed,) = cells(dom, "failed")
    assert failed[4] == "ERROR" and failed[-1] == "alpha"
    screenshots(url, "colony-service", shots, tmp_path)


def test_trace_page_names_the_agent(fleet: TwoAgentFleet, ui: str, shots: Path, tmp_path: Path) -> None:
    traces = colony_query(fleet, "traces", "--limit", "100")
    failed_id = next(t["trace_id"] for t in traces if t["status"] == "ERROR")
    url = with_token(f"{ui}/trace/{failed_id}")
    dom = page_dom(url, tmp_path)
    assert "shop @ alpha" in dom
    details = {row[0]: row[1] for row in cells(dom, "detail-table")}
    assert (details["agent"], details["status"]) == ("alpha", "ERROR: internal error")
    screenshots(url, "colony-trace", shots, tmp_path)


def test_health_page_is_the_colonys_view(fleet: TwoAgentFleet, ui: str, shots: Path, tmp_path: Path) -> None:
    url = with_token(f"{ui}/health")
    dom = page_dom(url, tmp_path)
    result = run_cli("colony", "status", "--config", str(fleet.colony.config_path), "--json")
    status = json.loads(result.stdout)
    assert f"Colony polling: pid {status['colony']['pid']}" in dom and "agents 2 up" in dom
    rows = cells(dom, "agents")
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
        (a["agent_id"], a["address"], "up", "0") for a in status["agents"]
    ]
    assert [row[5] for row in rows] == [str(a["rows_stored"]) for a in status["agents"]]
    screenshots(url, "colony-health", shots, tmp_path)


def test_the_view_sits_behind_the_colony_listeners_token(fleet: TwoAgentFleet, ui: str) -> None:
    assert answers(f"{ui}/") == 401 and answers(f"{ui}/api/services?window=1h") == 401
    request = urllib.request.Request(f"{ui}/api/agents", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        agents = json.load(response)
    assert [(a["agent_id"], a["state"]) for a in agents["items"]] == [("alpha", "up"), ("beta", "up")]
    status = fleet.colony.status()
    assert status["telemetry"]["mounts"] == ["/ui/"]
    text = run_cli("colony", "status", "--config", str(fleet.colony.config_path)).stdout
    assert f"web view: http://{status['telemetry']['address']}/ui/" in text


def test_ui_enabled_false_on_the_colony(tmp_path: Path) -> None:
    from tests.helpers.fleet import ColonyProcess

    colony = ColonyProcess(tmp_path / "colony", {"ui": {"enabled": False}})
    try:
        colony.start()
        base = f"http://{colony.status()['telemetry']['address']}"
        assert answers(f"{base}/ui/") == 404 and answers(f"{base}/-/healthy") == 200
        colony.stop()
    finally:
        colony.kill()
