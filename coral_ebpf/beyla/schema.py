"""Validation of generated Beyla YAML against Beyla's own JSON Schema (`beyla/config-schema-v3.31.0.json`).

One erratum is applied, and only one: the schema is generated from Beyla's Go structs and
describes `IntEnum` (used by `open_port`, `discovery.instrument[].open_ports`, ...) as the
struct `{"Ranges": [...]}`. Beyla never reads that shape from YAML: `IntEnum` has its own
YAML unmarshaller that takes a port number or a `"80,443,8000-8999"` string, which is how
every Beyla document and example writes it, and which is the schema's own `IntRange`
definition. Without the erratum no config that selects services by port could validate.

Validation is also strict about key names: Beyla ignores unknown or misspelt keys without a word,
so every object the schema describes with `properties` is closed (`additionalProperties: false`)
here. A typo in the renderer is then a validation error, not a silently dropped setting.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from coral_ebpf.resources import beyla_dir

SCHEMA_FILE = "config-schema-v3.31.0.json"
SCHEMA_VERSION = "v3.31.0"

INT_ENUM_ERRATUM: dict[str, Any] = {
    "description": "coral-ebpf erratum: Beyla's YAML unmarshaller reads a port number or an IntRange string",
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 65535},
        {"$ref": "#/$defs/IntRange"},
    ],
}


def schema_path() -> Path:
    return beyla_dir() / SCHEMA_FILE


@lru_cache(maxsize=1)
def beyla_schema() -> dict[str, Any]:
    """Beyla's schema with the IntEnum erratum applied (a fresh copy is never mutated by callers)."""
    original: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    patched = copy.deepcopy(original)
    patched["$defs"]["IntEnum"] = INT_ENUM_ERRATUM
    _close_objects(patched)
    return patched


def _close_objects(node: Any) -> None:
    """Forbid keys the schema does not name, wherever it names them (see the module docstring)."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = beyla_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Problems with `document` as a Beyla config, each as `dotted.key: message`; empty when valid."""
    problems = []
    for error in sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    return problems
