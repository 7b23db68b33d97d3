"""Reading, validating and converting the agent's YAML configuration file.

Errors name the file, the line and the dotted key, e.g.
`/etc/coral-ebpf/config.yaml:7: unknown key 'otlp.grpc_endpiont' (did you mean 'grpc_endpoint'?)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from coral_ebpf.config.formats import FORMAT_CHECKER
from coral_ebpf.config.schema import AgentConfig, build_schema
from coral_ebpf.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/coral-ebpf/config.yaml")

KeyPath = tuple[str | int, ...]


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path) if path else "(top level)"


class _LineIndex:
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
                        f"{self.source}:{line}: duplicate key {_dotted((*path, key))!r} "
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


def _iter_errors(document: Any, schema: Mapping[str, Any], index: _LineIndex) -> Iterator[str]:
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        yield _describe(error, schema, index)


def _describe(error: ValidationError, schema: Mapping[str, Any], index: _LineIndex) -> str:
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
            messages.append(f"{index.where(full)}: unknown key {_dotted(full)!r}{suggestion}")
        return "\n".join(messages)
    if error.validator == "format" and error.cause is not None:
        return f"{index.where(path)}: {_dotted(path)}: {error.cause}"
    if error.validator == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{index.where(path)}: {_dotted(path)}: expected {expected_text}, got {error.instance!r}"
    return f"{index.where(path)}: {_dotted(path)}: {error.message}"


def parse_config_text(text: str, source: str = "<config>") -> AgentConfig:
    """Validate YAML text against the schema and return the typed configuration."""
    index = _LineIndex(source, text)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}", "check indentation and quoting") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(document).__name__}")
    schema = build_schema()
    problems = list(_iter_errors(document, schema, index))
    if problems:
        raise ConfigError("\n".join(problems), "see the configuration reference in README.md")
    try:
        return AgentConfig.from_dict(document, source=source)
    except ValueError as exc:  # cross-key checks raised by a section's from_dict
        raise ConfigError(f"{source}: {exc}") from exc


def load_config(path: Path | str | None = None) -> AgentConfig:
    """Load the configuration at `path`; with no path, the default file, or built-in defaults if absent."""
    explicit = path is not None
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {config_path} does not exist",
                f"create it, or omit --config to use the defaults (and {DEFAULT_CONFIG_PATH} if present)",
            ) from None
        return AgentConfig.from_dict({}, source="(defaults)")
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc}") from exc
    return parse_config_text(text, source=str(config_path))


def validated_document(text: str, source: str, schema: Mapping[str, Any], hint: str) -> dict[str, Any]:
    """Parse YAML `text` and check it against `schema`: the mapping, or a ConfigError naming file,
    line and key (the same rules as the agent's file, for other files such as the colony's)."""
    index = _LineIndex(source, text)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}", "check indentation and quoting") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(document).__name__}")
    problems = list(_iter_errors(document, schema, index))
    if problems:
        raise ConfigError("\n".join(problems), hint)
    return document
