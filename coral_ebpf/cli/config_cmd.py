"""`coral-ebpf config check|show|schema|reference`: validate and inspect the configuration."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from coral_ebpf.agent.config import build_schema, reference_table
from coral_ebpf.cli._common import EXIT_FAILURE, EXIT_OK, add_config_flag, add_json_flag, config_from_args, print_json
from coral_ebpf.config.reference import write_blocks


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(f"{config.source}: ok")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    effective = _plain(config)
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
    show = sub.add_parser("show", help="print the effective configuration (file + defaults)")
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
