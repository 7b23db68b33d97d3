"""`coral-ebpf discover` (placeholder until its issue lands; replaced wholesale by the part's owner)."""

from __future__ import annotations

import argparse

from coral_ebpf.cli._common import EXIT_FAILURE, add_config_flag, add_json_flag, print_error


def _run(args: argparse.Namespace) -> int:
    print_error("'discover' is not built yet")
    return EXIT_FAILURE


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("discover", help="discover")
    add_config_flag(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)
