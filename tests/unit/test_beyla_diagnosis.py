"""Beyla's log lines (JSON and slog text) and the diagnosis drawn from how it ended."""

from __future__ import annotations

import logging
import signal
from typing import Any

import pytest

from coral_ebpf.beyla.diagnosis import WATCHER_FAILURE, diagnose_exit, diagnose_line
from coral_ebpf.beyla.dialect import LEGACY, V2, V3, V3_20, BeylaVersion, UnsupportedVersionError, dialect_for
from coral_ebpf.beyla.logparse import parse_line
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.target import agent_ports, otlp_endpoint_url
from coral_ebpf.beyla.version import version_from_line
from coral_ebpf.errors import ConfigError
from coral_ebpf.otlp.settings import OtlpSettings
from tests.beyla_standin.standin import FAILURES, Logger


def text_line(message: str, level: str = "ERROR", **fields: Any) -> str:
    parts = [f"time=2026-08-21T10:00:00.000Z level={level}", f"msg={Logger._text_value(message)}"]
    parts += [f"{k}={Logger._text_value(v)}" for k, v in fields.items()]
    return " ".join(parts)


def test_slog_text_lines_parse_with_quoted_keys_and_values() -> None:
    line = parse_line(
        'time=2026-08-21T10:00:00.000Z level=INFO msg="Grafana Beyla" Version=v3.35.0 Revision=1a2b3c4 '
        '"OpenTelemetry SDK Version"=1.38.0'
    )
    assert (line.level, line.message) == ("INFO", "Grafana Beyla")
    assert line.fields == {"Version": "v3.35.0", "Revision": "1a2b3c4", "OpenTelemetry SDK Version": "1.38.0"}
    assert line.python_level == logging.INFO


def test_json_lines_parse() -> None:
    line = parse_line('{"time":"x","level":"WARN","msg":"m","component":"discover.ProcessWatcher","error":"e"}')
    assert (line.level, line.message, line.error) == ("WARN", "m", "e")
    assert line.fields["component"] == "discover.ProcessWatcher"
    assert line.python_level == logging.WARNING


def test_other_lines_keep_their_text_and_stderr_counts_as_error() -> None:
    assert parse_line("panic: boom", "stderr").level == "ERROR"
    assert parse_line("some plain text", "stdout").level == "INFO"
    assert parse_line("{not json", "stdout").message == "{not json"


def test_version_line_in_both_formats() -> None:
    text = parse_line('level=INFO msg="Grafana Beyla" Version=v2.7.8 Revision=abc')
    assert str(version_from_line(text).version) == "v2.7.8"  # type: ignore[union-attr]
    json_line = parse_line('{"level":"INFO","msg":"Grafana Beyla","Version":"v3.35.0-rc.1","Revision":"d"}')
    info = version_from_line(json_line)
    assert info is not None and info.version == BeylaVersion(3, 35, 0) and info.text == "v3.35.0-rc.1"
    assert version_from_line(parse_line('level=INFO msg="Grafana Beyla" Version=main')) is None


@pytest.mark.parametrize(
    ("version", "dialect"),
    [("v1.0.0", LEGACY), ("v2.2.4", LEGACY), ("v2.5.0", V2), ("v2.7.8", V2), ("v3.0.0", V3), ("v3.19.9", V3),
     ("v3.20.0", V3_20), ("v3.35.0", V3_20), ("4.0.0", V3_20)],
)
def test_dialect_by_version(version: str, dialect: Any) -> None:
    assert dialect_for(BeylaVersion.parse(version)) is dialect


def test_unknown_version_gets_the_newest_dialect_and_ancient_ones_are_refused() -> None:
    assert dialect_for(None) is V3_20
    with pytest.raises(UnsupportedVersionError, match="older than"):
        dialect_for(BeylaVersion(0, 4, 1))


# Every failure line the stand-in prints is one of Beyla's; each must give its diagnosis.
@pytest.mark.parametrize(
    ("failure", "kind", "retryable"),
    [
        ("kernel_too_old", "kernel_too_old", False),
        ("no_btf", "no_btf", False),
        ("capabilities", "capabilities", False),
        ("wrong_configuration", "wrong_configuration", False),
        ("memlock", "memlock", False),
        ("runtime", "runtime_error", True),
    ],
)
def test_each_beyla_error_line_gets_its_diagnosis(failure: str, kind: str, retryable: bool) -> None:
    message, error = FAILURES[failure]
    diagnosis = diagnose_exit(255, parse_line(text_line(message, error=error)))
    assert (diagnosis.kind, diagnosis.retryable) == (kind, retryable)
    assert diagnosis.fix
    assert error in diagnosis.message or diagnosis.kind == "wrong_configuration"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (text_line("can't open /var/lib/coral-ebpf/beyla/beyla.yaml",
                   error="open /var/lib/coral-ebpf/beyla/beyla.yaml: no such file or directory"), "config_unreadable"),
        (text_line("wrong configuration", error="yaml: line 3: did not find expected key"), "wrong_configuration"),
        (text_line("unknown log level specified, choices are [DEBUG, INFO, WARN, ERROR]", error="x"),
         "wrong_configuration"),
        (text_line("Beyla ran with errors",
                   error="starting health check server: listen tcp 127.0.0.1:6061: bind: address already in use"),
         "port_in_use"),
        (text_line("can't start Beyla", error="apply CO-RE relocations: load kernel spec: "
                   "no BTF found for kernel version 5.4: not supported"), "no_btf"),
    ],
)
def test_more_error_lines(line: str, kind: str) -> None:
    assert diagnose_exit(255, parse_line(line)).kind == kind


def test_watcher_failure_is_a_degraded_diagnosis_not_an_exit_cause() -> None:
    error = "attaching kprobe sys_bind: not supported"
    line = parse_line(f'{{"level":"ERROR","msg":"{WATCHER_FAILURE}","error":"{error}"}}')
    diagnosis = diagnose_line(line)
    assert diagnosis is not None and diagnosis.kind == "discovery_dead" and "kprobe" in diagnosis.fix
    memlock = parse_line(f'{{"level":"ERROR","msg":"{WATCHER_FAILURE}","error":"MEMLOCK may be too low"}}')
    assert "LimitMEMLOCK" in diagnose_line(memlock).fix  # type: ignore[union-attr]
    # If Beyla then exits, the exit is diagnosed from its status, not from the watcher line.
    assert diagnose_exit(2, line).kind == "crash"


def test_exits_without_a_known_line() -> None:
    assert diagnose_exit(0, None).kind == "exited"
    assert diagnose_exit(255, None).kind == "fatal"
    crash = diagnose_exit(2, parse_line("panic: runtime error: invalid memory address", "stderr"))
    assert (crash.kind, crash.retryable) == ("crash", True)
    assert diagnose_exit(-signal.SIGKILL, None).kind == "killed"
    assert diagnose_exit(-signal.SIGKILL, None, oom_kills=1, memory_limit=1 << 30).kind == "memory_limit"
    oom = diagnose_exit(2, parse_line("fatal error: runtime: out of memory", "stderr"), memory_limit=1 << 28)
    assert oom.kind == "memory_limit"
    wrapper = diagnose_exit(126, parse_line("coral-ebpf wrapper: cannot join the memory cgroup", "stderr"))
    assert (wrapper.kind, wrapper.retryable) == ("start_failed", False)


def test_otlp_endpoint_for_beyla_follows_the_receiver() -> None:
    beyla = BeylaSettings()
    assert otlp_endpoint_url(OtlpSettings(), beyla) == "http://127.0.0.1:4318"
    assert otlp_endpoint_url(OtlpSettings(http_endpoint="0.0.0.0:14318"), beyla) == "http://127.0.0.1:14318"
    assert otlp_endpoint_url(OtlpSettings(http_endpoint="[::1]:4318"), beyla) == "http://[::1]:4318"
    grpc = BeylaSettings(otlp_protocol="grpc")
    assert otlp_endpoint_url(OtlpSettings(), grpc) == "http://127.0.0.1:4317"
    with pytest.raises(ConfigError, match=r"otlp\.grpc_endpoint is disabled"):
        otlp_endpoint_url(OtlpSettings(grpc_endpoint=None), grpc)
    assert agent_ports(OtlpSettings()) == (4317, 4318)
