"""A real Prometheus server (Debian's `prometheus`) on loopback, scraping given targets.

    with running_prometheus(tmp_path, ["127.0.0.1:9464"]) as prom:
        prom.wait_for_up()
        value = prom.scalar('sum(rate(http_server_request_duration_seconds_count[1m]))')

Only for integration tests, which run in a private network namespace.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.processes import free_port, stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, root: Path, address: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.root = root
        self.base = f"http://{address}"
        self.process = process
        self.log_path = log_path

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            document = json.loads(response.read())
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expression: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expression}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", **params)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def scalar(self, expression: str, at: float | None = None) -> float | None:
        result = self.query(expression, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/targets")["activeTargets"])

    def wait_for_up(self, timeout: float = 60) -> None:
        """Until every target was scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                targets = self.targets()
                if targets and all(target["health"] == "up" for target in targets):
                    return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus targets not up after {timeout}s: {targets}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "--- prometheus log ---\n" + "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_prometheus(
    root: Path,
    targets: Sequence[str],
    *,
    scrape_interval: str = "1s",
    scrape_config: dict[str, Any] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port, scraping `targets` every `scrape_interval`."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("Debian package prometheus is not installed (make system-deps)")
    root.mkdir(parents=True, exist_ok=True)
    job: dict[str, Any] = {
        "job_name": "coral-ebpf",
        "scrape_interval": scrape_interval,
        "scrape_timeout": scrape_interval,
        "static_configs": [{"targets": list(targets)}],
        **(scrape_config or {}),
    }
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump({"global": {"evaluation_interval": "1s"}, "scrape_configs": [job]}))
    address = f"127.0.0.1:{free_port()}"
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address={address}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    prometheus = Prometheus(root, address, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited ({process.returncode})\n{prometheus.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{prometheus.base}/-/ready", timeout=2) as ready:
                if ready.status == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after 60s\n{prometheus.log_tail()}")
            time.sleep(0.3)
        yield prometheus
    finally:
        stop_process(process, 30)
