"""`coral-ebpf` command line: a thin layer over the parts, one module per command.

Exit codes: 0 success, 1 failure (the operation could not be done), 2 usage (bad arguments
or a bad configuration file).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from coral_ebpf import __version__
from coral_ebpf.cli._common import EXIT_FAILURE, EXIT_USAGE, permission_error, print_error
from coral_ebpf.errors import ConfigError, CoralError

# Each module defines register(subparsers) and sets a `func(args) -> int` default.
COMMAND_MODULES = (
    "start",
    "status",
    "probe",
    "discover",
    "query",
    "beyla",
    "config_cmd",
    "colony",
    "mcp_cmd",
    "ui_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print_error(f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coral-ebpf",
        description="eBPF-native host agent: RED metrics and traces for the services on this host.",
    )
    parser.add_argument("--version", action="version", version=f"coral-ebpf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"coral_ebpf.cli.{name}")
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    except CoralError as exc:
        print_error(str(exc))
        return EXIT_FAILURE
    except PermissionError as exc:  # a file or socket of root's, opened by another user: no traceback
        print_error(str(permission_error(exc)))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_FAILURE
