"""JSON Schema building blocks and custom formats shared by the config sections."""

from __future__ import annotations

from typing import Any

from jsonschema import FormatChecker

from coral_ebpf.units import parse_duration, parse_endpoint, parse_size

FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("duration", raises=ValueError)
def _check_duration(value: object) -> bool:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        parse_duration(value)
    return True


@FORMAT_CHECKER.checks("size", raises=ValueError)
def _check_size(value: object) -> bool:
    if isinstance(value, str | int) and not isinstance(value, bool):
        parse_size(value)
    return True


@FORMAT_CHECKER.checks("endpoint", raises=ValueError)
def _check_endpoint(value: object) -> bool:
    if isinstance(value, str) and value != "":
        parse_endpoint(value)
    return True


def section(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An object schema that rejects unknown keys."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if description:
        schema["description"] = description
    return schema


DURATION: dict[str, Any] = {"type": ["string", "number"], "format": "duration"}
SIZE: dict[str, Any] = {"type": ["string", "integer"], "format": "size"}
ENDPOINT: dict[str, Any] = {
    "type": ["string", "null"],
    "format": "endpoint",
    "description": "host:port ([::1]:4317 for IPv6; port 0 picks a free port); empty or null disables it",
}
PATH: dict[str, Any] = {"type": "string", "minLength": 1}
BOOL: dict[str, Any] = {"type": "boolean"}
