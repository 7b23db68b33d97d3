"""`coral-ebpf discover`: the services listening on this host now, then live changes.

Runs discovery in this process (it does not need a running agent): prints the registry, then
one line per event until Ctrl-C or `--duration`. With `--json` every line is one JSON object,
flushed as written, so `coral-ebpf discover --json | jq` works live.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import signal
import socket
import sys
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

from coral_ebpf.agent.lifecycle import prepare_state_dir
from coral_ebpf.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_config_flag,
    add_json_flag,
    config_from_args,
    print_error,
    print_json_line,
    print_table,
)
from coral_ebpf.discovery.model import DiscoveryEvent, ServiceEntry

FAMILY_NAMES: dict[int, str] = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}


def unix_time(monotonic_ns: int) -> float:
    """A CLOCK_MONOTONIC timestamp (the kernel's event time) as seconds since the epoch."""
    return round(time.time() - (time.monotonic_ns() - monotonic_ns) / 1e9, 6)


def event_to_json(event: DiscoveryEvent) -> dict[str, Any]:
    """One JSON line: `pid` is the process id, `tid` the thread that triggered the event;
    `ts` is unix time in seconds (like traces), `ts_monotonic_ns` the kernel's own clock."""
    line: dict[str, Any] = {
        "event": event.event,
        "ts": unix_time(event.ts_ns),
        "ts_monotonic_ns": event.ts_ns,
        "pid": event.tgid,
        "tid": event.pid,
        "comm": event.comm,
        "netns": event.netns,
        "port": event.port,
        "service": event.service or None,
        "rule": event.rule or None,
    }
    if event.port is not None:
        line["family"] = FAMILY_NAMES.get(event.family or 0, event.family)
        line["address"] = event.address
        line["inode"] = event.inode or None
    if event.cgroup_id:
        line["cgroup_id"] = event.cgroup_id
    if event.event == "exec":
        line["filename"] = event.filename
    if event.event == "fork":
        line["child_pid"] = event.child_pid
    return line


def _endpoint(address: str, port: int | None, family: int | None) -> str:
    if family == socket.AF_INET6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def event_to_text(event: DiscoveryEvent) -> str:
    clock = datetime.now().strftime("%H:%M:%S.%f")[:-3]
    parts = [clock, f"{event.event:<8}", f"pid={event.tgid}", f"comm={event.comm}"]
    if event.port is not None:
        parts.append(f"listen={_endpoint(event.address, event.port, event.family)}")
    if event.event == "exec":
        parts.append(f"file={event.filename}")
    if event.event == "fork":
        parts.append(f"child={event.child_pid}")
    parts.append(f"netns={event.netns}")
    if event.service:
        parts.append(f"service={event.service}")
    if event.rule:
        parts.append(f"rule={event.rule}")
    return " ".join(parts)


def print_registry(entries: list[ServiceEntry]) -> None:
    rows = [
        (
            entry.pid,
            entry.name,
            str(entry.rule or ""),
            " ".join(_endpoint(item.address, item.port, item.family) for item in entry.listeners),
            entry.netns,
            entry.exe,
            entry.container_id[:12] if entry.container_id else "",
        )
        for entry in entries
    ]
    print_table(
        ("PID", "SERVICE", "RULE", "LISTENING ON", "NETNS", "EXECUTABLE", "CONTAINER"),
        rows,
        title="Services listening now",
        footer=f"{len(entries)} services; live changes follow (Ctrl-C to stop)",
    )


def _run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        print_error("--duration must be a positive number of seconds")
        return EXIT_USAGE
    config = config_from_args(args)
    if os.geteuid() != 0:
        print_error(
            "discover needs root: it loads BPF programs and reads every process's /proc entries "
            "(run: sudo coral-ebpf discover)"
        )
        return EXIT_FAILURE
    if not config.discovery.enabled:
        sys.stderr.write("coral-ebpf: note: discovery.enabled is false for the agent; discover runs it on demand\n")
    prepare_state_dir(config.state_dir)  # symlink- and owner-checked, like `start`
    settings = dataclasses.replace(config.discovery, enabled=True)
    from coral_ebpf.discovery.component import Discovery  # BCC and pyroute2: only `discover` pays

    discovery = Discovery(settings, config.state_dir, report_all_processes=args.all, services=config.services)
    events: queue.Queue[DiscoveryEvent] = queue.Queue()
    started = threading.Event()

    def on_event(event: DiscoveryEvent) -> None:
        # In table mode the start-up snapshot is shown as the table, not as lines.
        if args.json or started.is_set() or event.event != "snapshot":
            events.put(event)

    discovery.registry.subscribe_events(on_event)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        discovery.start()
        started.set()
        if not args.json:
            print_registry(discovery.registry.snapshot())
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                event = events.get(timeout=0.2 if remaining is None else min(0.2, remaining))
            except queue.Empty:
                continue
            if args.json:
                print_json_line(event_to_json(event))
            else:
                sys.stdout.write(event_to_text(event) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        discovery.stop(2.0)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "discover",
        help="show the services listening on this host, then live changes (needs root)",
        description="Print the TCP listeners of every process in every network namespace, then "
        "listen/close/exec/exit events as they happen, until Ctrl-C or --duration.",
    )
    add_config_flag(parser)
    add_json_flag(parser)
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--all",
        action="store_true",
        help="also print exec/exit/fork of processes that do not listen (normally only listeners')",
    )
    parser.set_defaults(func=_run)
