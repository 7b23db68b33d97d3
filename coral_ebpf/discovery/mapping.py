"""`services:` — the user's own names for processes, chosen by port, executable, command line, unit or container.

Selectors are shell globs (`fnmatch`, case-sensitive, the same as `discovery.exclude` and
Beyla's `discovery.instrument`), except `open_ports`, which takes Beyla's port list
(`8080` or `"80,443,8000-8999"`). Every selector given in one entry must match (AND, as in
Beyla); the first entry that matches names the process.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coral_ebpf.config.formats import section

SELECTORS = ("open_ports", "exe_path", "cmdline", "systemd_unit", "container")
_PORTS_TEXT = r"^\s*[0-9]+(\s*-\s*[0-9]+)?(\s*,\s*[0-9]+(\s*-\s*[0-9]+)?)*\s*$"

SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "Names for services, by port, executable, command line, systemd unit or container; "
    "the first entry whose selectors all match names the process (docs/discovery.md)",
    "items": {
        **section(
            {
                "name": {"type": "string", "minLength": 1, "description": "The service.name to report"},
                "namespace": {"type": "string", "minLength": 1, "description": "The service.namespace to report"},
                "open_ports": {
                    "type": ["string", "integer"],
                    "pattern": _PORTS_TEXT,
                    "minimum": 1,
                    "maximum": 65535,
                    "description": "Selector: listens on one of these ports (8080 or '80,443,8000-8999')",
                },
                "exe_path": {"type": "string", "minLength": 1, "description": "Selector: glob on the executable path"},
                "cmdline": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Selector: glob on the command line (arguments joined by spaces)",
                },
                "systemd_unit": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Selector: glob on the systemd unit (nginx.service, or nginx)",
                },
                "container": {"type": "string", "minLength": 1, "description": "Selector: glob on the container name"},
            }
        ),
        "required": ["name"],
    },
}


class MappingError(ValueError):
    """A `services:` entry that cannot select anything; `key` is where (`("services", 2, "open_ports")`)."""

    def __init__(self, message: str, key: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ProcessFacts:
    """What a mapping can select on, for one process."""

    exe: str
    cmdline: tuple[str, ...]
    ports: tuple[int, ...]
    systemd_unit: str | None
    container: str | None


def parse_ports(text: str | int, index: int) -> tuple[tuple[int, int], ...]:
    """`"80,443,8000-8999"` -> ((80, 80), (443, 443), (8000, 8999)); MappingError naming the entry if invalid."""
    key = f"services.{index}.open_ports"
    where = ("services", index, "open_ports")
    ranges = []
    for part in str(text).replace(" ", "").split(","):
        low_text, dash, high_text = part.partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            raise MappingError(f"{key}: {part!r} is not a port or a range like 8000-8999", where)
        low = int(low_text)
        high = int(high_text) if dash else low
        if not 1 <= low <= high <= 65535:
            raise MappingError(f"{key}: {part!r} is not a port or range in 1-65535 (low end first)", where)
        ranges.append((low, high))
    return tuple(ranges)


@functools.lru_cache(maxsize=256)
def port_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """The (low, high) ranges of an `open_ports` text that `parse_ports` accepted."""
    return parse_ports(text, 0)


@dataclass(frozen=True)
class ServiceMapping:
    """One `services:` entry, its values as written (so the configuration can be shown back)."""

    name: str
    namespace: str | None = None
    open_ports: str | None = None  # "80,443,8000-8999", validated
    exe_path: str | None = None
    cmdline: str | None = None
    systemd_unit: str | None = None
    container: str | None = None

    @classmethod
    def from_dict(cls, index: int, data: Mapping[str, Any]) -> ServiceMapping:
        given = [key for key in SELECTORS if data.get(key) is not None]
        if not given:
            raise MappingError(
                f"services.{index} ({data.get('name')!r}) has no selector: give at least one of {', '.join(SELECTORS)}",
                ("services", index),
            )
        ports = data.get("open_ports")
        exe_path = data.get("exe_path")
        if exe_path is not None and not exe_path.startswith(("/", "*", "?", "[")):
            raise MappingError(
                f"services.{index}.exe_path: {exe_path!r} would never match: executable paths are absolute "
                "(start it with / or a glob such as */python3*)",
                ("services", index, "exe_path"),
            )
        if ports is not None:
            ports = str(ports).replace(" ", "")
            parse_ports(ports, index)
        return cls(
            name=str(data["name"]),
            namespace=data.get("namespace"),
            open_ports=ports,
            exe_path=exe_path,
            cmdline=data.get("cmdline"),
            systemd_unit=data.get("systemd_unit"),
            container=data.get("container"),
        )

    def matches(self, facts: ProcessFacts) -> bool:
        if self.open_ports is not None:
            ranges = port_ranges(self.open_ports)
            if not any(low <= port <= high for port in facts.ports for low, high in ranges):
                return False
        if self.exe_path is not None and not fnmatch.fnmatchcase(facts.exe, self.exe_path):
            return False
        if self.cmdline is not None and not fnmatch.fnmatchcase(" ".join(facts.cmdline), self.cmdline):
            return False
        if self.systemd_unit is not None:
            unit = facts.systemd_unit
            if unit is None:
                return False
            short = unit.removesuffix(".service")
            if not (fnmatch.fnmatchcase(unit, self.systemd_unit) or fnmatch.fnmatchcase(short, self.systemd_unit)):
                return False
        return self.container is None or (
            facts.container is not None and fnmatch.fnmatchcase(facts.container, self.container)
        )


def mappings_from_list(entries: Sequence[Mapping[str, Any]]) -> tuple[ServiceMapping, ...]:
    """The `services:` list, typed; MappingError names the first entry that cannot work."""
    return tuple(ServiceMapping.from_dict(index, entry) for index, entry in enumerate(entries))


def first_match(mappings: Iterable[ServiceMapping], facts: ProcessFacts) -> ServiceMapping | None:
    return next((mapping for mapping in mappings if mapping.matches(facts)), None)
