"""What every command shares: exit codes, --json/--config flags, tables, and error printing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from coral_ebpf.agent.config import AgentConfig, load_config
from coral_ebpf.errors import NotRootError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="agent configuration (default /etc/coral-ebpf/config.yaml; built-in defaults if absent)",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    return load_config(getattr(args, "config", None))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str | None = None,
    footer: str | None = None,
) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console(soft_wrap=False)
    console.print(table)
    if footer:
        console.print(footer)


def permission_error(exc: PermissionError) -> NotRootError:
    """A refused file or socket, said as what to do (the state dir is 0700 and root's by design)."""
    what = f" {exc.filename}" if exc.filename else ""
    command = " ".join(["coral-ebpf", *sys.argv[1:]]) if sys.argv[1:] else "coral-ebpf …"
    return NotRootError(
        f"permission denied on{what}: the agent's state (database, control socket) is readable by root only",
        f"run it as root: sudo {command}",
    )


def print_error(message: str) -> None:
    sys.stderr.write(f"coral-ebpf: error: {message}\n")
