"""The supervisor with a real Grafana Beyla (v3.31.0 in CI), when one is named.

The binary comes from $CORAL_TEST_BEYLA (set by .ci/run after `../shared/beyla/install-test-beyla`),
else from $CORAL_EBPF_BEYLA_BIN; without either the tests skip. Like every integration test these
run inside a private network namespace (tests/integration/conftest.py), which matters here: Beyla
contacts cloud metadata addresses when it starts.

On a kernel without kprobes (the development machines) Beyla starts but its process watcher cannot
load: the capability probe says so, `beyla.force_start` starts it anyway, and the state must be
`degraded` with the `discovery_dead` diagnosis drawn from Beyla's own `Unable to load eBPF watcher`
line. On a kernel with kprobes the state must be `running`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coral_ebpf.beyla.binary import ENV_VAR, resolve_binary
from coral_ebpf.beyla.diagnosis import WATCHER_FAILURE
from coral_ebpf.beyla.dialect import BeylaVersion
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.beyla.version import CACHE_FILE, detect_version
from coral_ebpf.capabilities.report import Verdict
from coral_ebpf.capabilities.trials_attach import pmu_type
from coral_ebpf.discovery.model import ServiceEntry
from tests.beyla_standin.sink import OtlpSink
from tests.integration.beyla_support import http_service, settings_for, wait_for

TEST_ENV_VAR = "CORAL_TEST_BEYLA"
PINNED = BeylaVersion.parse("v3.31.0")


def _named_binary() -> Path | None:
    named = os.environ.get(TEST_ENV_VAR) or os.environ.get(ENV_VAR)
    return Path(named) if named else None


pytestmark = [
    pytest.mark.beyla,
    pytest.mark.skipif(
        not _named_binary(),
        reason=f"needs a real Beyla binary: set {TEST_ENV_VAR}=/path/to/beyla (e.g. from "
        "'../shared/beyla/install-test-beyla DIR', as .ci/run does) "
        "or install one with 'sudo coral-ebpf beyla install'",
    ),
]


def _has_kprobes() -> bool:
    """What Beyla's process watcher needs; the same test as the capability probe's first step."""
    tracefs = [Path("/sys/kernel/tracing/kprobe_events"), Path("/sys/kernel/debug/tracing/kprobe_events")]
    return pmu_type("kprobe") is not None or any(path.exists() for path in tracefs)


@pytest.fixture
def binary() -> Path:
    return resolve_binary(_named_binary(), os.environ).real_path


@pytest.fixture
def service() -> Iterator[ServiceEntry]:
    with http_service() as entry:
        yield entry


def test_real_beyla_reports_its_version(tmp_path: Path, binary: Path) -> None:
    info = detect_version(binary, tmp_path, timeout=60)
    assert info.line and "Grafana Beyla" in info.line
    if os.environ.get(TEST_ENV_VAR):  # the pinned test binary, not whatever a developer installed
        assert info.version == PINNED and info.text == "v3.31.0"
        assert info.revision.startswith("79cdaa14")
    # Cached by the binary's identity (path, inode, mtime, size), so a restart does not start Beyla again.
    stat = binary.stat()
    entry = json.loads((tmp_path / CACHE_FILE).read_text())[str(binary)]
    assert (entry["ino"], entry["mtime_ns"], entry["size"]) == (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    assert entry["version"] == info.text


def test_real_beyla_accepts_the_generated_config_and_is_supervised(
    tmp_path: Path, binary: Path, service: ServiceEntry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coral_ebpf.beyla.child")
    kprobes = _has_kprobes()
    probe = (
        None if kprobes else Verdict(False, "no kprobes: Beyla's process watcher cannot load", "use red.engine: bcc")
    )
    with OtlpSink() as sink:
        settings = settings_for(
            tmp_path / "state",
            binary,
            force_start=not kprobes,
            health={"grace": "60s", "interval": "2s", "timeout": "2s", "failures": 5},
            shutdown_timeout="10s",
        )
        supervisor = BeylaSupervisor(settings, otlp_endpoint=sink.endpoint, services=[service], probe=probe)
        supervisor.start()
        try:
            expected = "running" if kprobes else "degraded"
            status = wait_for(supervisor, lambda s: s["state"] in (expected, "failed", "backoff"), timeout=120)
            # Beyla accepted the rendered config: it did not exit (a rejected config exits with status 255).
            assert status["state"] == expected, status["diagnosis"]
            assert status["restarts"] == 0 and status["pid"] is not None
            document = yaml.safe_load(Path(status["config_path"]).read_text())
            assert document["otel_metrics_export"]["endpoint"] == sink.endpoint
            # Discovery's name and instance-id host reach Beyla, and it accepted them.
            (selector,) = document["discovery"]["instrument"]
            assert selector["name"] == "http.server" == service.name
            assert document["attributes"]["instance_id"]["override_hostname"] == socket.gethostname()
            # beyla.histograms' default: Beyla v3.31.0 runs with exponential histograms asked for.
            assert document["otel_metrics_export"]["histogram_aggregation"] == "base2_exponential_bucket_histogram"
            # Beyla names a value it does not know ("invalid value for histogram aggregation ... Using default")
            # before its process watcher starts; it said nothing of the kind.
            beyla_lines = [record.getMessage() for record in caplog.records if record.name == "coral_ebpf.beyla.child"]
            assert beyla_lines, "no Beyla log line was relayed"
            assert not [line for line in beyla_lines if "histogram aggregation" in line], beyla_lines
            assert status["rss_bytes"] > 0
            if not kprobes:
                diagnosis = status["diagnosis"]
                assert diagnosis["kind"] == "discovery_dead"
                assert WATCHER_FAILURE in diagnosis["line"] and WATCHER_FAILURE in diagnosis["message"]
                assert "the probe said: no kprobes" in diagnosis["fix"]
                assert status["probe_warning"].endswith("(started anyway: beyla.force_start is true)")
        finally:
            supervisor.stop(30)
        assert supervisor.status()["pid"] is None
