"""Configuration reload on SIGHUP (`systemctl reload coral-ebpf`): what changed, and what of it
can be applied while the agent runs.

Applied live:
- `log_level`, `log_format`: the log handler is set up again;
- `discovery.exclude`: the new patterns, then a resync so running services are judged again;
- `services`: every process is named again (the engines and Beyla's config follow the new names);
- `red.routes`, `red.unmatched_routes`, `red.max_routes_per_service`, `red.max_path_segment_cardinality`,
  `red.fold_not_found`, `red.ignored_routes`, `red.sampling`: the built-in engine's route tables are
  rebuilt (each service's routes are learnt again) and the new ignore list and sampling apply;
- every `beyla.*` key except `enabled`, `binary` and `attributes`: Beyla's config is rendered again
  and Beyla restarted with it when the rendered file differs.

Everything else (listeners, storage, state dir, the engine choice, ...) is reported as needing a
restart, by dotted key, and keeps its running value. A config that does not validate changes
nothing; the error is logged and shown in `status`.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.discovery.mapping import ServiceMapping
from coral_ebpf.logsetup import setup_logging
from coral_ebpf.red.settings import RedSettings

# Keys under a section that are applied live (a section listed as a whole: every key but the exceptions).
LIVE_TOP = ("log_level", "log_format")
LIVE_DISCOVERY = ("exclude",)
LIVE_RED = (
    "routes",
    "unmatched_routes",
    "max_routes_per_service",
    "max_path_segment_cardinality",
    "fold_not_found",
    "ignored_routes",
    "sampling",
)
BEYLA_NEEDS_RESTART = ("enabled", "binary", "attributes", "state_dir")


def _changes(old: Any, new: Any, prefix: str) -> Iterator[str]:
    """Dotted names of the fields that differ (one level into nested dataclasses)."""
    for field in dataclasses.fields(old):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(before) and not isinstance(before, type):
            yield from (f"{prefix}{field.name}.{name}" for name in _field_changes(before, after))
        else:
            yield f"{prefix}{field.name}"


def _field_changes(old: Any, new: Any) -> Iterator[str]:
    for field in dataclasses.fields(old):
        if getattr(old, field.name) != getattr(new, field.name):
            yield field.name


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from `old` to `new` changes."""

    applied: tuple[str, ...]  # dotted keys applied live
    needs_restart: tuple[str, ...]  # dotted keys that keep their running value until a restart
    config: AgentConfig  # the running config after the reload: new values for applied keys only

    @property
    def beyla_changed(self) -> bool:
        return any(key.startswith("beyla.") for key in self.applied)

    @property
    def red_routes_changed(self) -> bool:
        return any(key.startswith("red.") for key in self.applied)

    @property
    def exclude_changed(self) -> bool:
        return "discovery.exclude" in self.applied

    @property
    def services_changed(self) -> bool:
        return "services" in self.applied

    @property
    def logging_changed(self) -> bool:
        return any(key in LIVE_TOP for key in self.applied)


def plan_reload(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    changed = [key for key in _changes(old, new, "") if key != "source"]
    applied: list[str] = []
    needs_restart: list[str] = []
    for key in changed:
        section, _, rest = key.partition(".")
        first = rest.split(".", 1)[0]
        live = (
            key in LIVE_TOP
            or key == "services"
            or (section == "discovery" and first in LIVE_DISCOVERY)
            or (section == "red" and first in LIVE_RED)
            or (section == "beyla" and rest and first not in BEYLA_NEEDS_RESTART)
        )
        (applied if live else needs_restart).append(key)
    beyla = new.beyla
    for name in BEYLA_NEEDS_RESTART:
        beyla = dataclasses.replace(beyla, **{name: getattr(old.beyla, name)})
    running = dataclasses.replace(
        old,
        source=new.source,
        log_level=new.log_level,
        log_format=new.log_format,
        discovery=dataclasses.replace(old.discovery, exclude=new.discovery.exclude),
        red=dataclasses.replace(old.red, **{name: getattr(new.red, name) for name in LIVE_RED}),
        beyla=beyla,
        services=new.services,
    )
    return ReloadPlan(tuple(applied), tuple(needs_restart), running)


class RouteTarget(Protocol):
    def set_route_settings(self, settings: RedSettings) -> None: ...


class ExcludeTarget(Protocol):
    def set_exclude(self, patterns: Sequence[str]) -> None: ...

    def set_services(self, services: Sequence[ServiceMapping]) -> None: ...


class BeylaTarget(Protocol):
    def update_settings(self, settings: BeylaSettings) -> None: ...


def apply_live(
    plan: ReloadPlan,
    *,
    discovery: ExcludeTarget | None,
    red: RouteTarget | None,
    beyla: BeylaTarget | None,
) -> None:
    """Hand each running part the keys of its own that changed."""
    if plan.logging_changed:
        setup_logging(plan.config.log_level, plan.config.log_format)
    if plan.exclude_changed and discovery is not None:
        discovery.set_exclude(plan.config.discovery.exclude)
    if plan.services_changed and discovery is not None:
        discovery.set_services(plan.config.services)
    if plan.red_routes_changed and red is not None:
        red.set_route_settings(plan.config.red)
    if plan.beyla_changed and beyla is not None:
        beyla.update_settings(plan.config.beyla)


class ReloadSignal:
    """SIGHUP sets a flag the agent's main loop picks up (no work in the signal handler)."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.requested.set())

    def take(self) -> bool:
        """True once per SIGHUP (several before the loop looks count as one)."""
        if self.requested.is_set():
            self.requested.clear()
            return True
        return False
