"""Beyla's YAML, generated from the agent's `beyla:` settings and the discovery registry.

The renderer is a pure function: the same settings, services and target always give the same
text, so the supervisor can tell whether a discovery change needs a restart by comparing it.
Every document is validated against Beyla's JSON Schema before it is returned.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coral_ebpf.beyla.dialect import LEGACY, V3_20, BeylaVersion, Dialect
from coral_ebpf.beyla.schema import SCHEMA_VERSION, schema_errors
from coral_ebpf.beyla.settings import DEFAULT_PROTOCOLS, HISTOGRAM_AGGREGATIONS, BeylaSettings, RouteSettings
from coral_ebpf.discovery.model import ServiceEntry
from coral_ebpf.errors import CoralError
from coral_ebpf.safe_paths import prepare_private_dir

# Globs on the command line that name the agent, whichever way it was started
# (`coral-ebpf start`, `python -m coral_ebpf start`).
AGENT_CMD_GLOBS = ("*coral-ebpf*", "*coral_ebpf*")
_GLOB_CHARS = set("*?[]{}\\")
TRACES_BATCH_DEFAULT = 4096  # Beyla's otel_traces_export.batch_max_size default


class RenderError(CoralError):
    """A setting the detected Beyla cannot carry, or a generated document Beyla's schema rejects."""


@dataclass(frozen=True)
class SelfExclusion:
    """What Beyla must never instrument: the agent, its listening ports and Beyla itself."""

    agent_pids: tuple[int, ...] = ()
    agent_ports: tuple[int, ...] = ()
    beyla_binary: Path | None = None
    agent_cmd_globs: tuple[str, ...] = AGENT_CMD_GLOBS

    @classmethod
    def for_this_process(cls, agent_ports: Iterable[int] = (), beyla_binary: Path | None = None) -> SelfExclusion:
        return cls(agent_pids=(os.getpid(),), agent_ports=tuple(sorted(set(agent_ports))), beyla_binary=beyla_binary)


@dataclass(frozen=True)
class RenderTarget:
    """Where Beyla sends its data and how the supervisor reaches it."""

    otlp_endpoint: str  # e.g. http://127.0.0.1:4318 (no trailing slash: Beyla would POST to "/")
    health_port: int | None = None  # used only by dialects with /healthz
    exclusion: SelfExclusion = SelfExclusion()
    # The host name in Beyla's service.instance.id (`<host>:<pid>`), the one discovery's identities use;
    # "" leaves Beyla to its own (which may resolve an FQDN through DNS).
    hostname: str = ""


@dataclass(frozen=True)
class SkippedService:
    pid: int
    name: str
    reason: str


@dataclass(frozen=True)
class RenderedConfig:
    document: dict[str, Any]
    text: str
    dialect: Dialect
    selectors: tuple[dict[str, Any], ...]  # what Beyla will instrument (empty: nothing to do)
    skipped: tuple[SkippedService, ...] = field(default=())

    @property
    def has_targets(self) -> bool:
        return bool(self.selectors)


def beyla_duration(seconds: float) -> str:
    """Seconds as Beyla writes durations (^[0-9]+(ms|s|m)$): `5s`, `1500ms`, `5m`."""
    millis = round(seconds * 1000)
    if millis % 60000 == 0:
        return f"{millis // 60000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def _glob_safe(path: str) -> bool:
    return path.startswith("/") and not (set(path) & _GLOB_CHARS) and not path.endswith(" (deleted)")


def _ports_text(ports: Iterable[int]) -> str:
    return ",".join(str(p) for p in sorted(set(ports)))


def _excluded_by_cmd(entry: ServiceEntry, exclusion: SelfExclusion) -> bool:
    command = " ".join(entry.cmdline)
    return any(fnmatch.fnmatchcase(command, glob) for glob in exclusion.agent_cmd_globs)


def service_selectors(
    entries: Sequence[ServiceEntry], exclusion: SelfExclusion
) -> tuple[list[dict[str, Any]], list[SkippedService]]:
    """One `{open_ports, exe_path, name}` selector per discovered service, minus the agent and Beyla.

    `name` (and `namespace`) carry the identity discovery chose (discovery/identity.py), so Beyla
    reports the same `service.name` as the built-in engine.

    Both keys in one selector must match (Beyla ANDs them), so a port is only instrumented in
    the process that was discovered on it. Never a catch-all: mixing a catch-all with specific
    rules makes Beyla attach twice and capture nothing (the Go agent's trap).
    """
    selectors: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: list[SkippedService] = []
    beyla_path = str(exclusion.beyla_binary) if exclusion.beyla_binary else None
    for entry in entries:
        if entry.pid in exclusion.agent_pids or _excluded_by_cmd(entry, exclusion):
            skipped.append(SkippedService(entry.pid, entry.name, "the agent itself"))
            continue
        # Beyla's own listener (/healthz) must never make it restart itself; a script (like the test
        # stand-in, `python -I beyla ...`) shows the binary among its first arguments, not as its executable.
        if beyla_path and (entry.exe == beyla_path or beyla_path in entry.cmdline[:3]):
            skipped.append(SkippedService(entry.pid, entry.name, "Beyla itself"))
            continue
        ports = [p for p in entry.ports if p not in exclusion.agent_ports and p > 0]
        if not ports:
            reason = "listens only on the agent's own ports" if entry.ports else "no listening port"
            skipped.append(SkippedService(entry.pid, entry.name, reason))
            continue
        selector: dict[str, Any] = {"open_ports": _ports_text(ports)}
        if _glob_safe(entry.exe):
            selector["exe_path"] = entry.exe
        if entry.identity is not None:
            # Beyla's own naming would call every Python app `python3.11`: hand it discovery's name
            # (entries made up for `beyla config --port` have none: Beyla names those itself).
            selector["name"] = entry.name
            if entry.namespace:
                selector["namespace"] = entry.namespace
        key = (selector["open_ports"], selector.get("exe_path", ""))
        selectors.setdefault(key, selector)
    return [selectors[key] for key in sorted(selectors)], skipped


def _static_selectors(settings: BeylaSettings) -> list[dict[str, Any]]:
    found = []
    for rule in settings.instrument:
        selector: dict[str, Any] = {}
        if rule.open_ports is not None:
            selector["open_ports"] = rule.open_ports
        if rule.exe_path is not None:
            selector["exe_path"] = rule.exe_path
        found.append(selector)
    return found


def _exclusions(exclusion: SelfExclusion, dialect: Dialect) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"cmd_args": glob} for glob in exclusion.agent_cmd_globs]
    if dialect.selector_pids and exclusion.agent_pids:
        rules.append({"target_pids": list(exclusion.agent_pids)})
    if exclusion.agent_ports:
        rules.append({"open_ports": _ports_text(exclusion.agent_ports)})
    if exclusion.beyla_binary is not None and _glob_safe(str(exclusion.beyla_binary)):
        rules.append({"exe_path": str(exclusion.beyla_binary)})
    return rules


def _routes(routes: RouteSettings) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if routes.patterns:
        document["patterns"] = list(routes.patterns)
    if routes.ignored_patterns:
        document["ignored_patterns"] = list(routes.ignored_patterns)
    if routes.ignore_mode:
        document["ignore_mode"] = routes.ignore_mode
    if routes.unmatched:
        document["unmatched"] = routes.unmatched
    if routes.wildcard_char:
        document["wildcard_char"] = routes.wildcard_char
    return document


def _legacy_refusals(settings: BeylaSettings, version: BeylaVersion | None) -> None:
    """Keys whose presence before Beyla v2.5 is not established: refuse rather than risk Beyla ignoring them."""
    defaults = BeylaSettings()
    unverified = {
        "beyla.protocols": settings.protocols != DEFAULT_PROTOCOLS,
        "beyla.sampling": settings.sampling != defaults.sampling,
        "beyla.limits.traces_queue_size": settings.limits.traces_queue_size is not None,
        "beyla.limits.metrics_ttl": settings.limits.metrics_ttl is not None,
        "beyla.traces_batch_timeout": settings.traces_batch_timeout != defaults.traces_batch_timeout,
    }
    for index, rule in enumerate(settings.instrument):
        unverified[f"beyla.instrument.{index}.exe_path"] = rule.exe_path is not None
    for key, set_by_user in unverified.items():
        if set_by_user:
            raise RenderError(
                f"{key}: Beyla {version or '(unknown version)'} predates v2.5; the agent cannot pass this "
                "setting to it (older releases silently ignore keys they do not know)",
                "install the pinned release with 'coral-ebpf beyla install', or remove the setting",
            )


def render(
    settings: BeylaSettings,
    services: Sequence[ServiceEntry],
    target: RenderTarget,
    dialect: Dialect = V3_20,
    version: BeylaVersion | None = None,
) -> RenderedConfig:
    """The Beyla YAML for these services; raises RenderError for a setting the dialect cannot carry."""
    legacy = dialect is LEGACY
    if legacy:
        _legacy_refusals(settings, version)
    discovered, skipped = service_selectors(services, target.exclusion)
    selectors = discovered + [s for s in _static_selectors(settings) if s not in discovered]
    protocols = list(settings.protocols)
    endpoint = target.otlp_endpoint.rstrip("/")

    metrics: dict[str, Any] = {
        "endpoint": endpoint,
        "protocol": settings.otlp_protocol,
        "interval": beyla_duration(settings.metrics_interval),
        "histogram_aggregation": HISTOGRAM_AGGREGATIONS[settings.histograms],
    }
    traces: dict[str, Any] = {"endpoint": endpoint, "protocol": settings.otlp_protocol}
    document: dict[str, Any] = {
        "log_level": settings.log_level.upper(),
        "shutdown_timeout": beyla_duration(settings.shutdown_timeout),
        "otel_metrics_export": metrics,
        "otel_traces_export": traces,
    }
    if not legacy:
        metrics["instrumentations"] = list(protocols)
        traces["instrumentations"] = list(protocols)
        traces["batch_timeout"] = beyla_duration(settings.traces_batch_timeout)
        if settings.sampling.sampler is not None:
            sampler: dict[str, Any] = {"name": settings.sampling.sampler}
            if settings.sampling.ratio is not None:
                sampler["arg"] = repr(settings.sampling.ratio)
            traces["sampler"] = sampler
        if settings.limits.traces_queue_size is not None:
            queue = settings.limits.traces_queue_size
            traces["queue_size"] = queue
            traces["batch_max_size"] = min(TRACES_BATCH_DEFAULT, queue // 2)
        if settings.limits.metrics_ttl is not None:
            metrics["ttl"] = beyla_duration(settings.limits.metrics_ttl)

    if dialect.features_key == "metrics":
        document["metrics"] = {"features": ["application"]}
    elif dialect.features_key == "otel_metrics_export":
        metrics["features"] = ["application"]

    if dialect.instrument_globs:
        document["discovery"] = {"instrument": selectors, "exclude_instrument": _exclusions(target.exclusion, dialect)}
    else:
        parts = _merge_port_parts(s["open_ports"] for s in selectors)
        selectors = [{"open_ports": parts}] if parts else []
        if parts:
            document["open_port"] = parts

    if target.hostname and not legacy:
        document["attributes"] = {"instance_id": {"override_hostname": target.hostname, "dns": False}}
    routes = _routes(settings.routes)
    if routes:
        document["routes"] = routes
    if dialect.health_check and target.health_port:
        document["health_check"] = {"port": target.health_port, "listen_address": "127.0.0.1"}

    problems = schema_errors(document)
    if problems:
        raise RenderError(
            "the generated Beyla config does not validate against Beyla's schema "
            f"({SCHEMA_VERSION}): " + "; ".join(problems),
            "this is a bug in coral-ebpf's renderer or in a beyla.* value; please report it with 'coral-ebpf "
            "beyla config'",
        )
    text = "# Generated by coral-ebpf; rewritten on every discovery change. Do not edit.\n" + yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False
    )
    return RenderedConfig(document, text, dialect, tuple(selectors), tuple(skipped))


def _merge_port_parts(texts: Iterable[str]) -> str:
    """`80,443` and `443,8000-8999` -> `80,443,8000-8999`: ranges stay ranges."""
    parts = {part.strip() for text in texts for part in text.split(",") if part.strip()}
    return ",".join(sorted(parts, key=lambda part: (int(part.partition("-")[0]), part)))


def write_config(rendered: RenderedConfig, path: Path) -> Path:
    """Write the YAML atomically with mode 0600 (its directory 0700)."""
    prepare_private_dir(path.parent, "Beyla config directory")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(rendered.text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
    return path
