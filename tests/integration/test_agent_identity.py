"""Two Python web apps on one host are two services (issue 15), end to end through `coral-ebpf start`
with the built-in engine: `python3 -m http.server` and a uvicorn `shopapi:app` are named from their
command lines, not both `python3.11`; the uvicorn app runs twice, and `query http` tells its two
instances apart and filters one with `--instance`. A `services:` entry names a third by its port.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.agent_process import running_agent
from tests.helpers.processes import free_port, stop_process
from tests.helpers.timing import eventually

ASGI_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)


APPS = ("http.server", "shopapi", "inventory")


@contextlib.contextmanager
def web_app(args: list[str], cwd: Path, port: int) -> Iterator[int]:
    """A web server on 127.0.0.1:`port`, up until the block ends; yields its pid."""
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        eventually(answers, timeout=30, what=f"{args} listening on {port}")
        yield process.pid
    finally:
        stop_process(process, 10)


def send(port: int, path: str, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(count):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    connection.close()


def test_two_python_apps_are_two_services_and_instances_are_told_apart(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "shopapi.py").write_text(ASGI_APP)
    files_port, shop_a, shop_b, mapped_port = free_port(), free_port(), free_port(), free_port()
    settings: dict[str, Any] = {
        "beyla": {"enabled": False},
        "red": {"export_interval": "500ms"},
        "storage": {"flush_interval": "200ms"},
        "services": [{"name": "inventory", "namespace": "warehouse", "open_ports": mapped_port}],
    }
    hostname = socket.gethostname()
    uvicorn = [sys.executable, "-m", "uvicorn", "shopapi:app", "--host", "127.0.0.1", "--port"]
    with (
        running_agent(tmp_path / "agent", settings, timeout=240) as agent,
        web_app(
            [sys.executable, "-m", "http.server", str(files_port), "--bind", "127.0.0.1"], apps, files_port
        ) as files,
        web_app([*uvicorn, str(shop_a)], apps, shop_a) as first_shop,
        web_app([*uvicorn, str(shop_b)], apps, shop_b) as second_shop,
        web_app(
            [sys.executable, "-m", "http.server", str(mapped_port), "--bind", "127.0.0.1"], apps, mapped_port
        ) as mapped,
    ):
        traced = {files, first_shop, second_shop, mapped}

        def all_traced(status: dict[str, Any]) -> bool:
            served = {service["pid"]: service["name"] for service in status["red"].get("services", [])}
            return traced <= set(served)

        document = agent.wait_for(all_traced, timeout=60, what="the apps traced by the built-in engine")
        names = {service["pid"]: service["name"] for service in document["red"]["services"]}
        rules = {service["pid"]: (service["rule"], service["instance_id"]) for service in document["red"]["services"]}
        assert rules[files] == ("command_line", f"{hostname}:{files}")
        assert rules[mapped] == ("config", f"{hostname}:{mapped}")
        assert [names[pid] for pid in (files, first_shop, second_shop, mapped)] == [
            "http.server",
            "shopapi",
            "shopapi",
            "inventory",
        ]

        send(files_port, "/", 4)
        send(shop_a, "/orders", 6)
        send(shop_b, "/orders", 3)
        send(mapped_port, "/", 2)

        def rows() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = agent.cli_json("query", "http", "--since", "1h")
            return found

        def counted(found: list[dict[str, Any]]) -> bool:
            return sum(int(row["requests"]) for row in found if row["service"] in APPS) >= 15

        found = eventually(rows, timeout=60, what="the requests in query http", until=counted, interval=0.5)
        # (The agent's own telemetry is a service too: `coral-ebpf`.)
        by_instance = {(row["service"], row["instance"]): row["requests"] for row in found if row["service"] in APPS}
        assert by_instance == {
            ("http.server", f"{hostname}:{files}"): 4,
            ("shopapi", f"{hostname}:{first_shop}"): 6,
            ("shopapi", f"{hostname}:{second_shop}"): 3,
            ("inventory", f"{hostname}:{mapped}"): 2,
        }
        (only,) = agent.cli_json("query", "http", "--since", "1h", "--instance", f"{hostname}:{second_shop}")
        assert (only["service"], only["requests"]) == ("shopapi", 3)

        table = agent.cli("query", "http", "--since", "1h", "--service", "shopapi", columns=160).stdout
        assert "Instance" in table and f"{hostname}:{first_shop}" in table

        log = agent.log_text()
        for pid, name in ((files, "http.server"), (first_shop, "shopapi")):
            appeared = [line for line in log.splitlines() if "service appeared" in line and f"pid={pid}" in line]
            assert appeared and f"service={name}" in appeared[0] and "rule=command_line" in appeared[0]
            traced_lines = [line for line in log.splitlines() if "service traced" in line and f"pid={pid}" in line]
            assert traced_lines and "engine=bcc" in traced_lines[0]
        assert any("service=inventory" in line and "rule=config" in line for line in log.splitlines())
