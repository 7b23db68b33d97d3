"""Reading a YAML configuration document and checking it against a JSON Schema.

Generic over the schema: the agent's own configuration (which sections exist, how they become
typed settings, the rules across keys) lives in `coral_ebpf.agent.config`. Errors name the file,
the line and the dotted key, e.g.
`/etc/coral-ebpf/config.yaml:7: unknown key 'otlp.grpc_endpiont' (did you mean 'grpc_endpoint'?)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from coral_ebpf.config.formats import FORMAT_CHECKER
from coral_ebpf.errors import ConfigError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path) if path else "(top level)"


class LineIndex:
    """Maps each key path of a YAML document to the 1-based line it was written on."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines: dict[KeyPath, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None  # the parse error itself is reported by the loader
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: KeyPath) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"{self.source}:{line}: duplicate key {dotted((*path, key))!r} "
                        f"(first written on line {seen[key]})",
                        "keep one of the two entries",
                    )
                seen[key] = line
                self.lines[(*path, key)] = line
                self._walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def line_of(self, path: KeyPath) -> int | None:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def where(self, path: KeyPath) -> str:
        line = self.line_of(path)
        return f"{self.source}:{line}" if line else self.source


@dataclass(frozen=True)
class ConfigDocument:
    """A parsed YAML mapping, with where each key was written."""

    source: str
    data: dict[str, Any]
    index: LineIndex

    def where(self, path: KeyPath) -> str:
        return self.index.where(path)


def parse_document(text: str, source: str = "<config>") -> ConfigDocument:
    """Parse YAML text whose top level must be a mapping (an empty file is an empty mapping)."""
    index = LineIndex(source, text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}", "check indentation and quoting") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
    return ConfigDocument(source, data, index)


def read_document(path: Path | None, default_path: Path) -> ConfigDocument | None:
    """Read and parse `path`; with no path, `default_path` if it exists, else None (built-in defaults)."""
    explicit = path is not None
    config_path = path if path is not None else default_path
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {config_path} does not exist",
                f"create it, or omit --config to use the defaults (and {default_path} if present)",
            ) from None
        return None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
    return parse_document(text, source=str(config_path))


def _schema_at(schema: Mapping[str, Any], path: KeyPath) -> Mapping[str, Any]:
    for part in path:
        if isinstance(part, int):
            schema = schema.get("items", {})
        else:
            props = schema.get("properties", {})
            schema = props.get(part, schema.get("additionalProperties") or {})
            if not isinstance(schema, Mapping):
                return {}
    return schema


def schema_problems(document: ConfigDocument, schema: Mapping[str, Any]) -> list[str]:
    """Every place `document` breaks `schema`, each as `file:line: key: what is wrong`."""
    return list(_iter_errors(document, schema))


def _iter_errors(document: ConfigDocument, schema: Mapping[str, Any]) -> Iterator[str]:
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(document.data), key=lambda e: list(map(str, e.absolute_path))):
        yield _describe(error, schema, document.index)


def _describe(error: ValidationError, schema: Mapping[str, Any], index: LineIndex) -> str:
    path: KeyPath = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(_schema_at(schema, path).get("properties", {}))
        messages = []
        for key in error.instance:
            if key in known:
                continue
            full = (*path, key)
            guess = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f" (did you mean {guess[0]!r}?)" if guess else f" (known keys: {', '.join(known)})"
            messages.append(f"{index.where(full)}: unknown key {dotted(full)!r}{suggestion}")
        return "\n".join(messages)
    if error.validator == "format" and error.cause is not None:
        return f"{index.where(path)}: {dotted(path)}: {error.cause}"
    if error.validator == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{index.where(path)}: {dotted(path)}: expected {expected_text}, got {error.instance!r}"
    return f"{index.where(path)}: {dotted(path)}: {error.message}"
