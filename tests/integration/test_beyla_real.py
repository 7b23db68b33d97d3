"""The supervisor with a real Grafana Beyla, when CORAL_EBPF_BEYLA_BIN names one.

Like every integration test these run inside a private network namespace (tests/integration/
conftest.py), which matters here: Beyla contacts cloud metadata addresses when it starts.
On a kernel without kprobes (the development machines) Beyla runs but its process watcher cannot
load, so the expected state is `degraded` with the `discovery_dead` diagnosis; elsewhere `running`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coral_ebpf.beyla.binary import ENV_VAR, resolve_binary
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.beyla.version import detect_version
from coral_ebpf.discovery.model import ServiceEntry
from tests.beyla_standin.sink import OtlpSink
from tests.integration.beyla_support import http_service, settings_for, wait_for

pytestmark = [
    pytest.mark.beyla,
    pytest.mark.skipif(
        not os.environ.get(ENV_VAR),
        reason=f"needs a real Beyla binary: set {ENV_VAR}=/path/to/beyla (root-owned, not group/other-writable); "
        "install one with 'sudo coral-ebpf beyla install'",
    ),
]


@pytest.fixture
def binary() -> Path:
    return resolve_binary(None, os.environ).real_path


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


def test_real_beyla_reports_its_version(binary: Path) -> None:
    info = detect_version(binary, None, timeout=60)
    assert info.version.major >= 1 and info.line


def test_real_beyla_accepts_the_generated_config_and_is_supervised(
    tmp_path: Path, binary: Path, service: ServiceEntry
) -> None:
    with OtlpSink() as sink:
        settings = settings_for(
            tmp_path / "state", binary, health={"grace": "60s", "interval": "2s", "timeout": "2s", "failures": 5},
            shutdown_timeout="10s",
        )
        supervisor = BeylaSupervisor(settings, otlp_endpoint=sink.endpoint, services=[service])
        supervisor.start()
        try:
            status = wait_for(supervisor, lambda s: s["state"] in ("running", "degraded", "failed"), timeout=120)
            assert status["state"] != "failed", status["diagnosis"]
            if status["state"] == "degraded":
                assert status["diagnosis"]["kind"] == "discovery_dead"
            document = yaml.safe_load(Path(status["config_path"]).read_text())
            assert document["otel_metrics_export"]["endpoint"] == sink.endpoint
            assert status["rss_bytes"] > 0
        finally:
            supervisor.stop(30)
        assert supervisor.status()["pid"] is None
