"""`coral-ebpf config check|show|schema|reference`: validate and inspect the configuration."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from coral_ebpf.agent.config import DEFAULT_CONFIG_PATH, AgentConfig, build_schema, reference_table
from coral_ebpf.cli._common import EXIT_FAILURE, EXIT_OK, add_config_flag, add_json_flag, config_from_args, print_json
from coral_ebpf.config.loader import read_document
from coral_ebpf.config.reference import leaves, write_blocks
from coral_ebpf.units import format_duration


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _size_text(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


def _in_units(value: Any, node: Mapping[str, Any]) -> Any:
    """An effective value as a person writes it: durations as `15m`, sizes as `16MiB`."""
    if node.get("format") == "duration" and isinstance(value, int | float) and not isinstance(value, bool):
        return format_duration(float(value))
    if node.get("format") == "size" and isinstance(value, int) and not isinstance(value, bool):
        return _size_text(value)
    return _plain(value)


_MISSING = object()


def _lookup(data: Any, path: Sequence[str]) -> Any:
    for name in path:
        if isinstance(data, Mapping) and name in data:
            data = data[name]
        elif not isinstance(data, Mapping) and hasattr(data, name):
            data = getattr(data, name)
        else:
            return _MISSING
    return data


def _nested(section: Any, name: str) -> Any:
    """`name` in one of the section's nested settings (`otlp.max_connections` is kept as `otlp.limits`')."""
    if not dataclasses.is_dataclass(section):
        return _MISSING
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if dataclasses.is_dataclass(value) and hasattr(value, name):
            return getattr(value, name)
    return _MISSING


def effective_document(data: Mapping[str, Any], config: AgentConfig) -> dict[str, Any]:
    """The configuration as a file `config check` accepts: the user's values as written (their units),
    every other key the schema has with its effective value (durations and sizes in units).

    Keys without a value (None: the part or Beyla decides) are left out unless the file sets them;
    a list of objects (`beyla.instrument`, …) is the file's, or left out when it does not set one.
    """
    document: dict[str, Any] = {}
    for leaf in leaves(build_schema()):
        path = leaf.path[: leaf.path.index("[]")] if "[]" in leaf.path else leaf.path
        written = _lookup(data, path)
        if written is not _MISSING:
            value = written
        elif "[]" in leaf.path:
            continue
        else:
            effective = _lookup(config, path)
            if effective is _MISSING:
                effective = _nested(_lookup(config, path[:-1]), path[-1])
            if effective is _MISSING or effective is None:
                continue
            value = _in_units(effective, leaf.node)
        target = document
        for name in path[:-1]:
            target = target.setdefault(name, {})
        target[path[-1]] = value
    return document


def _check(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(f"{config.source}: ok")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    path = getattr(args, "config", None)
    source = read_document(Path(path) if path is not None else None, DEFAULT_CONFIG_PATH)
    config = config_from_args(args)
    effective = effective_document(source.data if source is not None else {}, config)
    if args.json:
        print_json(effective)
    else:
        import yaml

        print(yaml.safe_dump(effective, sort_keys=False), end="")
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    print_json(build_schema())
    return EXIT_OK


def _reference(args: argparse.Namespace) -> int:
    if not args.write:
        print(reference_table(args.section), end="")
        return EXIT_OK
    stale = []
    for name in args.write:
        changed = write_blocks(Path(name), reference_table)
        print(f"{name}: {'configuration reference rewritten' if changed else 'configuration reference up to date'}")
        stale += [name] if changed else []
    return EXIT_FAILURE if stale and args.check else EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("config", help="validate and show the agent configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    check = sub.add_parser("check", help="validate the configuration file; exit 2 with the problems if invalid")
    add_config_flag(check)
    check.set_defaults(func=_check)
    show = sub.add_parser(
        "show",
        help="print the effective configuration (file + defaults) as a file 'config check' accepts",
    )
    add_config_flag(show)
    add_json_flag(show)
    show.set_defaults(func=_show)
    schema = sub.add_parser("schema", help="print the configuration's JSON Schema")
    add_json_flag(schema)
    schema.set_defaults(func=_schema)
    reference = sub.add_parser(
        "reference", help="print the configuration reference (Markdown) generated from the schema"
    )
    reference.add_argument("--section", metavar="NAME", help="only this section's keys (otlp, storage, red, ...)")
    reference.add_argument(
        "--write",
        metavar="FILE",
        nargs="+",
        help="rewrite the generated blocks in FILE (README.md, docs/*.md) instead of printing",
    )
    reference.add_argument("--check", action="store_true", help="with --write: exit 1 if the block was out of date")
    reference.set_defaults(func=_reference)
