"""The agent's configuration: one YAML file validated against a JSON Schema.

Every part's settings module imports `coral_ebpf.config.formats`, and the schema imports every
part's settings module; so this package resolves its public names lazily, which lets a part's
settings be imported first without entering that cycle half-way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coral_ebpf.config.loader import DEFAULT_CONFIG_PATH, load_config, parse_config_text
    from coral_ebpf.config.schema import AgentConfig, build_schema

_PUBLIC = {
    "DEFAULT_CONFIG_PATH": "coral_ebpf.config.loader",
    "load_config": "coral_ebpf.config.loader",
    "parse_config_text": "coral_ebpf.config.loader",
    "AgentConfig": "coral_ebpf.config.schema",
    "build_schema": "coral_ebpf.config.schema",
}

__all__ = ["DEFAULT_CONFIG_PATH", "AgentConfig", "build_schema", "load_config", "parse_config_text"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'coral_ebpf.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
