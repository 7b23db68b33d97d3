"""`coral-ebpf mcp`: a Model Context Protocol server on stdio, for AI assistants (read-only)."""

from __future__ import annotations

import argparse

from coral_ebpf.cli._common import EXIT_OK, EXIT_USAGE, add_config_flag, config_from_args, print_error


def _run(args: argparse.Namespace) -> int:
    # The SDK is imported only for this command: the other commands start without it.
    from coral_ebpf.ask.server import build_server
    from coral_ebpf.cli.backend import AgentBackend, colony_backend

    if args.colony is not None:
        if getattr(args, "config", None):
            print_error("--config names an agent's configuration; with --colony give the colony's: --colony FILE")
            return EXIT_USAGE
        build_server(colony_backend(args.colony or None)).run("stdio")
    else:
        build_server(AgentBackend(config_from_args(args))).run("stdio")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "mcp",
        help="serve read-only questions to AI assistants (Model Context Protocol on stdio)",
        description="Serve the Model Context Protocol on stdin/stdout: list_services, red_summary, slow_traces, "
        "failed_traces, get_trace, agent_status, compare_windows. Answers come from the running agent "
        "(its control socket), or from the database file read-only when no agent runs. With --colony they come "
        "from a colony on this host (its control socket, or its database read-only) for every agent it polls; "
        "the tools then take an `agent` argument and list_agents joins them.",
    )
    add_config_flag(parser)
    parser.add_argument(
        "--colony",
        nargs="?",
        const="",
        metavar="FILE",
        help="answer for a colony's fleet (its config FILE, default /etc/coral-ebpf/colony.yaml)",
    )
    parser.set_defaults(func=_run)
