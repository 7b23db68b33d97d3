"""`coral-ebpf status`: each part of the running agent, its state, since when, and its counters."""

from __future__ import annotations

import argparse
import time
from typing import Any

from coral_ebpf.agent.control import ControlClient
from coral_ebpf.cli._common import EXIT_OK, add_config_flag, add_json_flag, config_from_args, print_json, print_table

# Parts in the order they start; each row shows the counters a person looks at first.
PARTS = ("probe", "storage", "receiver", "discovery", "red", "beyla", "control")
HEADLINE_KEYS = {
    "probe": ("summary",),
    "storage": ("path", "db_size_bytes", "queue_depth", "queue_capacity", "rows_written", "retention_s"),
    "receiver": ("grpc_address", "http_address", "spans_received", "metrics_received", "rejected"),
    "discovery": ("services", "events", "lost_events", "resyncs", "buffer"),
    "red": ("engine", "reason", "services"),
    "beyla": ("pid", "version", "restarts", "last_exit_code", "diagnosis", "rss_bytes", "health"),
    "control": ("socket", "requests"),
}


def _ago(since: Any) -> str:
    if not isinstance(since, int | float):
        return ""
    seconds = max(0, int(time.time() - since))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_compact(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _details(part: str, document: dict[str, Any]) -> str:
    shown = []
    for key in HEADLINE_KEYS.get(part, ()):
        if key in document and document[key] not in (None, "", [], {}):
            shown.append(f"{key}={_compact(document[key])}")
    if document.get("reason") and "reason" not in HEADLINE_KEYS.get(part, ()):
        shown.append(f"reason={document['reason']}")
    return "  ".join(shown)


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    document = ControlClient(config.control.socket).status()
    if args.json:
        print_json(document)
        return EXIT_OK
    agent = document.get("agent", {})
    rows = []
    for part in PARTS:
        if part not in document:
            continue
        body = document[part]
        rows.append((part, body.get("state", "?"), _ago(body.get("since")), _details(part, body)))
    title = (
        f"coral-ebpf {agent.get('version', '?')}  pid {agent.get('pid', '?')}  "
        f"up {_ago(agent.get('started')).removesuffix(' ago')}  config {agent.get('config', '?')}"
    )
    print_table(("Part", "State", "Since", "Details"), rows, title=title)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="show the running agent's parts, states and counters",
        description="Ask the running agent (over its control socket) for the state of each part.",
    )
    add_config_flag(parser)
    add_json_flag(parser)
    parser.set_defaults(func=_run)
