"""The configuration reference (README.md), generated from the schema so that each setting is described once.

Each row is a leaf key of the schema: its dotted name, its default (from the typed defaults the
caller passes, or the schema's `x-default` text where the default is not a value, e.g. "host name"),
and its `description` (plus the allowed values of an enum). The table sits between two marker
lines in the README; `coral-ebpf config reference --write README.md` rewrites it, and a unit test
fails when the committed text differs from what the schema generates.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral_ebpf.errors import ConfigError
from coral_ebpf.units import format_duration

BEGIN = "<!-- BEGIN config-reference: generated from the schema by `coral-ebpf config reference --write README.md` -->"
END = "<!-- END config-reference -->"
UNSET = object()  # a key with no default value (the part or Beyla decides)


@dataclass(frozen=True)
class Leaf:
    key: str  # dotted, `[]` for the items of an array of objects
    path: tuple[str, ...]  # the same as attribute names, `[]` included
    node: Mapping[str, Any]


def leaves(schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every key a person can set, depth first in the schema's order."""
    properties = schema.get("properties")
    if properties and schema.get("type") == "object" and schema.get("additionalProperties") is False:
        for name, child in properties.items():
            yield from leaves(child, (*path, name))
        return
    items = schema.get("items")
    if schema.get("type") == "array" and isinstance(items, Mapping) and items.get("properties"):
        for name, child in items["properties"].items():
            yield from leaves(child, (*path, "[]", name))
        return
    yield Leaf(".".join(path).replace(".[]", "[]"), path, schema)


def _size(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


def _value(value: Any, node: Mapping[str, Any]) -> str:
    if node.get("format") == "duration" and isinstance(value, int | float):
        return format_duration(float(value))
    if node.get("format") == "size" and isinstance(value, int):
        return _size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return str(value)


def default_text(leaf: Leaf, default: Any) -> str:
    if "x-default" in leaf.node:
        return str(leaf.node["x-default"])
    if default is UNSET or default is None:
        return "—"
    return f"`{_value(default, leaf.node)}`"


def meaning(node: Mapping[str, Any]) -> str:
    text = str(node.get("description", "")).rstrip(".")
    choices = node.get("enum")
    if choices is None and isinstance(node.get("items"), Mapping):
        choices = node["items"].get("enum")
    if choices is not None and len(choices) <= 8:  # longer lists are in the schema (config schema)
        listed = ", ".join(f"`{choice}`" for choice in choices)
        text = f"{text} (one of {listed})" if text else f"one of {listed}"
    return text.replace("|", "\\|")


def render_table(schema: Mapping[str, Any], default_of: Callable[[Leaf], Any]) -> str:
    """The Markdown table: key, default, meaning."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for leaf in leaves(schema):
        rows.append(f"| `{leaf.key}` | {default_text(leaf, default_of(leaf))} | {meaning(leaf.node)} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, table: str, source: str = "README.md") -> str:
    """`text` with the table between the markers replaced by `table`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{source}: no configuration reference block", f"add the lines {BEGIN} and {END}")
    return text[: start + len(BEGIN)] + "\n" + table + text[end:]


def committed_table(text: str, source: str = "README.md") -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{source}: no configuration reference block", f"add the lines {BEGIN} and {END}")
    return text[start + len(BEGIN) + 1 : end]


def write_block(path: Path, table: str) -> bool:
    """Rewrite the block in `path`; True when its text changed."""
    text = path.read_text(encoding="utf-8")
    updated = replace_block(text, table, str(path))
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text
