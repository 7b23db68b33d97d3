"""`coral-ebpf colony start|status`: the fleet view that polls many agents' pull APIs."""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path
from typing import Any

from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.cli._common import EXIT_OK, add_json_flag, print_json, print_table
from coral_ebpf.colony.settings import DEFAULT_CONFIG_PATH, ColonyConfig, load_colony_config
from coral_ebpf.errors import CoralError


def colony_config(path: str | None) -> ColonyConfig:
    return load_colony_config(Path(path) if path else None)


def _start(args: argparse.Namespace) -> int:
    from coral_ebpf.agent.lifecycle import AgentAlreadyRunningError, StopSignal, prepare_state_dir, single_instance_lock
    from coral_ebpf.colony.service import Colony
    from coral_ebpf.logsetup import setup_logging

    config = colony_config(args.config)
    setup_logging(args.log_level or config.log_level, config.log_format)
    prepare_state_dir(config.state_dir)
    stop = StopSignal()
    stop.install()
    try:
        with single_instance_lock(config.state_dir):
            Colony(config).run(stop)
    except AgentAlreadyRunningError as exc:
        raise CoralError(
            f"another colony is using the state directory {config.state_dir} ({exc.message})",
            "stop it first, or give this one another state_dir",
        ) from None
    return EXIT_OK


def colony_status(config: ColonyConfig) -> dict[str, Any]:
    """From the running colony, or (stopped) from what its database kept."""
    client = ControlClient(config.control_socket)
    if client.available():
        document: dict[str, Any] = client.status()
        document["running"] = True
        return document
    from coral_ebpf.colony.store import read_status_offline

    document = read_status_offline(config.database)
    document["running"] = False
    return document


def _ago(when: float | None) -> str:
    if not when:
        return "never"
    seconds = max(0.0, time.time() - when)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


def _status(args: argparse.Namespace) -> int:
    document = colony_status(colony_config(args.config))
    if args.json:
        print_json(document)
        return EXIT_OK
    rows = []
    for agent in document["agents"]:
        gaps = agent["gaps"]
        gap_text = ", ".join(f"{state} {count}" for state, count in gaps.items() if count) or "none"
        rows.append(
            (
                agent["agent_id"],
                _ago(agent["last_success"]),
                "" if agent["lag_rows"] is None else str(agent["lag_rows"]),
                "" if agent["lag_seconds"] is None else f"{agent['lag_seconds']:.0f}s",
                str(agent["rows_stored"]),
                (agent["session_id"] or "")[:8],
                gap_text,
                f"{agent['consecutive_failures']}x {agent['last_error']}" if agent["last_error"] else "",
            )
        )
    database = document["database"]
    state = "running" if document.get("running") else "not running"
    stamp = datetime.datetime.now().astimezone().strftime("%H:%M:%S")
    title = f"coral-ebpf colony ({state}, {stamp})  database {database['path']} {_size(database['size_bytes'])}"
    print_table(("Agent", "Last poll", "Lag rows", "Lag", "Rows", "Session", "Gaps", "Error"), rows, title=title)
    telemetry = document.get("telemetry") or {}
    if telemetry.get("address"):
        scheme = "https" if telemetry.get("tls") else "http"
        print(f"metrics: {scheme}://{telemetry['address']}/metrics")
        for mount in telemetry.get("mounts", []):
            print(f"web view: {scheme}://{telemetry['address']}{mount}")
    elif telemetry.get("reason"):
        print(f"metrics: {telemetry.get('state')} ({telemetry['reason']})")
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "colony",
        help="the fleet view: poll agents' pull APIs into one database",
        description="Run or inspect a colony, which copies the RED metrics and traces of many agents into one DuckDB.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    start = actions.add_parser("start", help="run the colony in the foreground until SIGTERM or SIGINT")
    status = actions.add_parser("status", help="per agent: last poll, lag, errors, session, gaps; database size")
    for sub in (start, status):
        sub.add_argument("--config", metavar="FILE", help=f"colony configuration (default {DEFAULT_CONFIG_PATH})")
    start.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override log_level")
    add_json_flag(status)
    start.set_defaults(func=_start)
    status.set_defaults(func=_status)
