"""The README's configuration reference documents every key the schema accepts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coral_ebpf.agent.config import build_schema

README = Path(__file__).resolve().parents[2] / "README.md"


def _leaf_keys(node: dict[str, Any], path: str = "") -> Iterator[str]:
    properties = node.get("properties")
    if properties and node.get("type") == "object":
        for key, child in properties.items():
            yield from _leaf_keys(child, f"{path}.{key}" if path else key)
        return
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict) and items.get("properties"):
        for key, child in items["properties"].items():
            yield from _leaf_keys(child, f"{path}[].{key}")
        return
    yield path


def test_every_config_key_is_documented() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [key for key in _leaf_keys(build_schema()) if f"| `{key}` |" not in text]
    assert not missing, f"README's configuration reference lacks: {missing}"
