"""`coral-ebpf ui`: the read-only web view on its own endpoint (loopback by default; a token elsewhere)."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from coral_ebpf.cli._common import EXIT_OK, EXIT_USAGE, add_config_flag, config_from_args, print_error
from coral_ebpf.units import parse_endpoint

DEFAULT_ENDPOINT = "127.0.0.1:9465"


def _token(path: str | None) -> str | None:
    if path is None:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    return token or None


def _run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from coral_ebpf.cli.backend import AgentBackend, colony_backend
    from coral_ebpf.ui.app import build_ui_app
    from coral_ebpf.ui.auth import is_loopback

    try:
        host, port = parse_endpoint(args.endpoint)
    except ValueError as exc:
        print_error(f"--endpoint: {exc}")
        return EXIT_USAGE
    token = _token(args.token_file)
    if not is_loopback(host) and token is None:
        print_error(
            f"--endpoint {args.endpoint} is reachable from other hosts: give --token-file (a file holding a secret; "
            f"e.g. {secrets.token_urlsafe(24)!r}), or listen on 127.0.0.1"
        )
        return EXIT_USAGE
    if args.colony is not None and getattr(args, "config", None):
        print_error("--config names an agent's configuration; with --colony give the colony's: --colony FILE")
        return EXIT_USAGE
    backend = colony_backend(args.colony or None) if args.colony is not None else AgentBackend(config_from_args(args))
    app = build_ui_app(backend, token=token)
    print(f"coral-ebpf ui: http://{host}:{port}/", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ui",
        help="serve the read-only web view (services, RED over time, traces, health)",
        description="Serve the web view: services, a service's RED charts and traces, a trace's waterfall, "
        "and health. Answers come from the running agent, or from the database file read-only. With --colony "
        "they come from a colony on this host (its control socket, else its database read-only), for every agent "
        "it polls (the running colony also serves this view under /ui/ on its own listener).",
    )
    add_config_flag(parser)
    parser.add_argument(
        "--colony",
        nargs="?",
        const="",
        metavar="FILE",
        help="show a colony's fleet (its config FILE, default /etc/coral-ebpf/colony.yaml)",
    )
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        metavar="HOST:PORT",
        help=f"where to listen (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="a file holding the token requests must carry (required off loopback)"
    )
    parser.set_defaults(func=_run)
