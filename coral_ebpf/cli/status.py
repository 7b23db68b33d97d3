"""`coral-ebpf status`: each part of the running agent, its state, since when, and its counters."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from typing import Any

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.agent.lifecycle import lock_holder
from coral_ebpf.agent.status import Part
from coral_ebpf.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_config_flag,
    add_json_flag,
    config_from_args,
    permission_error,
    print_json,
)
from coral_ebpf.cli.query_output import plural
from coral_ebpf.cli.table import Shrink, output_width, render, text
from coral_ebpf.errors import AgentNotRunningError, CoralError
from coral_ebpf.state import HEALTHY_STATES


def _ago(since: Any) -> str:
    if not isinstance(since, int | float):
        return ""
    seconds = max(0, int(time.time() - since))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _signal_totals(receiver: dict[str, Any], signal: str, key: str) -> int:
    total = 0
    for transport in ("grpc", "http"):
        stats = receiver.get(transport, {}).get("signals", {}).get(signal, {})
        total += int(stats.get(key, 0) or 0)
    return total


def _whole(text: Any) -> str:
    return " ".join(str(text).split())


_WHOLE_REASON_WIDTH = 60  # the Details column of an 80-column status line, less "reason: "


def _first_sentence(text: Any) -> str:
    """The summary of a long text for the one-line view (`--verbose` has all).

    Texts read "what happened (evidence): why; what else". A text that fits beside a part's name
    is kept whole; else its first sentence (up to a full stop or semicolon) if that fits; else as
    many of its leading "a: b: c" clauses as fit, so a cause such as "database: No space left on
    device (ENOSPC)" stays; a first clause that alone is too long loses its parenthesis.
    """
    value = _whole(text)
    if len(value) <= _WHOLE_REASON_WIDTH:
        return value
    sentence = _cut_at(value, (". ", "; "))
    if len(sentence) <= _WHOLE_REASON_WIDTH:
        return sentence
    clauses = sentence.split(": ")
    kept = clauses[0]
    for clause in clauses[1:]:
        if len(kept) + 2 + len(clause) > _WHOLE_REASON_WIDTH:
            break
        kept = f"{kept}: {clause}"
    return kept if len(kept) <= _WHOLE_REASON_WIDTH else _cut_at(kept, (" (",))


def _cut_at(value: str, marks: tuple[str, ...]) -> str:
    cuts = [index for index in (value.find(mark) for mark in marks) if index > 0]
    return value[: min(cuts)] if cuts else value


def _service_names(services: list[Any], limit: int = 8) -> str:
    names = [
        f"{service.get('name', '?')} (pid {service.get('pid', '?')})" if isinstance(service, dict) else str(service)
        for service in services[:limit]
    ]
    more = len(services) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _spool_fact(spool: Any) -> str:
    if not isinstance(spool, dict):
        return "spool off"
    return f"spool {_bytes(spool.get('bytes'))}/{_bytes(spool.get('max_bytes'))}"


def _details(part: str, body: dict[str, Any], *, verbose: bool = True) -> list[str]:
    """The few facts a person looks at first, per part; `--json` has everything.

    Without `verbose` the long texts (Beyla's diagnosis and fix, warnings, errors, notes) are
    cut to their first sentence, for the one-line-per-part view.
    """
    summary = _whole if verbose else _first_sentence
    if part == "probe":
        summary = body.get("summary", {})
        ok = [name for name, verdict in summary.items() if verdict == "ok"]
        no = [name for name, verdict in summary.items() if verdict != "ok"]
        return [f"kernel {body.get('kernel', '?')}", f"ok: {', '.join(ok) or '-'}", f"not ok: {', '.join(no) or '-'}"]
    if part == "storage":
        rows = body.get("rows_written", {})
        return [
            str(body.get("path", "")),
            f"size {_bytes(body.get('db_size_bytes'))}",
            f"queue {body.get('queue_depth', '?')}/{body.get('queue_capacity', '?')}",
            _spool_fact(body.get("spool")),
            f"rows written {sum(rows.values()) if isinstance(rows, dict) else rows}",
            f"retention {body.get('retention_seconds', '?')}s",
        ]
    if part == "transform":
        sources = body.get("sources", {})
        return [f"sources: {', '.join(sources) if sources else 'none yet'}"]
    if part == "receiver":
        addresses = [f"{t} {body[t].get('address')}" for t in ("grpc", "http") if body.get(t, {}).get("enabled")]
        return [
            ", ".join(addresses) or "no listener",
            f"spans {_signal_totals(body, 'traces', 'items_accepted')}",
            f"metric points {_signal_totals(body, 'metrics', 'items_accepted')}",
            "rejected " + str(sum(_signal_totals(body, s, "items_rejected") for s in ("traces", "metrics", "logs"))),
            "refused, to retry (429/503) "
            + str(sum(_signal_totals(body, s, "items_refused") for s in ("traces", "metrics", "logs"))),
            # A taken default port is a problem an operator must see: summarised unless --verbose.
            *(_whole(note) if verbose else _first_sentence(note) for note in body.get("notes", [])),
        ]
    if part == "discovery":
        events = body.get("events", {})
        lost = body.get("lost", {})
        return [
            f"services {body.get('services', '?')}",
            f"listeners {body.get('listeners', '?')}",
            f"events {sum(events.values()) if isinstance(events, dict) else events}",
            f"lost {sum(lost.values()) if isinstance(lost, dict) else lost}",
            f"resyncs {body.get('resyncs', 0)}",
            str(body.get("buffer", "")),
        ]
    if part == "red":
        services = body.get("services", [])
        facts = [f"engine {body.get('engine', '?')}"]
        if body.get("state") == "running" and body.get("engine") == "bcc":
            facts += [
                f"services {len(services) if isinstance(services, list) else services}",
                f"requests {body.get('requests', 0)}",
                f"errors {body.get('errors', 0)}",
            ]
            if isinstance(services, list) and services:
                facts.append(f"serving {_service_names(services)}")
        return facts
    if part == "beyla":
        diagnosis = body.get("diagnosis") or {}
        facts = []
        for key in ("pid", "version", "restarts", "last_exit_code"):
            if body.get(key) not in (None, ""):
                facts.append(f"{key.replace('_', ' ')} {body[key]}")
        if body.get("rss_bytes"):
            facts.append(f"rss {_bytes(body['rss_bytes'])}")
        if isinstance(diagnosis, dict) and diagnosis.get("message"):
            facts.append(f"diagnosis: {summary(diagnosis['message'])}")
            if diagnosis.get("fix") and verbose:
                facts.append(f"fix: {_whole(diagnosis['fix'])}")
        if body.get("probe_warning"):
            facts.append(f"warning: {summary(body['probe_warning'])}")
        return facts
    if part == "control":
        return [str(body.get("socket", ""))]
    if part == "export":
        items = body.get("exported_items", {})
        facts = [str(body.get("endpoint", "")), f"exported {sum(items.values()) if isinstance(items, dict) else items}"]
        queued = plural(int(body.get("queue_requests", 0) or 0), "request")
        facts.append(f"queue {queued}, {_bytes(body.get('queue_bytes'))}")
        for key in ("retries", "dropped_requests", "failed_requests"):
            if body.get(key):
                facts.append(f"{key.replace('_', ' ')} {body[key]}")
        if body.get("last_error"):
            facts.append(f"last error: {summary(body['last_error'])}")
        return facts
    if part == "telemetry":
        scheme = "https" if body.get("tls") else "http"
        facts = [f"{scheme}://{body['address']}/metrics"] if body.get("address") else []
        if body.get("address"):
            facts.extend(f"web view {scheme}://{body['address']}{mount}" for mount in body.get("mounts", []))
        if body.get("token"):
            facts.append("bearer token required")
        if body.get("scrapes"):
            facts.append(f"scrapes {body['scrapes']} (last {body.get('last_scrape_ms')} ms)")
        return facts
    if part == "colony_api" and body.get("address"):
        security = "mTLS" if body.get("mtls") else "TLS" if body.get("tls") else "plaintext (loopback)"
        token = " + token" if body.get("token") else ""
        return [str(body["address"]), f"{security}{token}", f"calls {body.get('calls', 0)}"]
    return []


def _ask(config: AgentConfig) -> dict[str, Any]:
    try:
        return ControlClient(config.control.socket).status()
    except PermissionError as exc:
        raise permission_error(exc) from None
    except AgentNotRunningError:
        # The socket opens once every part has started (the probe and BCC compiles take seconds):
        # an agent that holds the state dir but does not answer yet is starting, not absent.
        pid = lock_holder(config.state_dir)
        if pid is None:
            raise
        raise AgentNotRunningError(
            f"the coral-ebpf agent (pid {pid}) holds {config.state_dir} but does not answer on "
            f"{config.control.socket}: it is still starting, or it runs with another control.socket",
            "try again in a few seconds (its log shows how far it got), or pass the --config it runs with",
        ) from None


def failed_parts(document: dict[str, Any]) -> list[str]:
    """The parts whose state is `failed` (what makes `status` exit 1)."""
    return [part for part in Part if isinstance(document.get(part), dict) and document[part].get("state") == "failed"]


def _title(agent: dict[str, Any], *, verbose: bool) -> str:
    title = (
        f"coral-ebpf {agent.get('version', '?')}  pid {agent.get('pid', '?')}  "
        f"up {_ago(agent.get('started')).removesuffix(' ago')}  config {agent.get('config', '?')}"
    )
    memory = agent.get("memory")
    if isinstance(memory, dict):
        title += (
            f"  memory {_bytes(memory.get('anon_rss_bytes'))} private of limits.memory "
            f"{_bytes(memory.get('limit_bytes'))}"
        )
        if verbose:
            title += (
                f" (rss {_bytes(memory.get('rss_bytes'))}, idle {_bytes(memory.get('idle_rss_bytes'))}, "
                f"peak {_bytes(memory.get('peak_rss_bytes'))})"
            )
    if agent.get("state") in ("starting", "stopping"):
        title += f"  ({agent['state']})"
    return title


def _part_facts(part: str, body: dict[str, Any], *, verbose: bool) -> list[str]:
    reason = body.get("reason")
    if not verbose and body.get("state") == "disabled":
        return [f"reason: {_first_sentence(reason)}"] if reason else []
    facts = _details(part, body, verbose=verbose)
    if not verbose:
        # What is wrong comes first, so the width cuts the counters rather than the diagnosis.
        facts.sort(key=lambda fact: not fact.startswith(("diagnosis:", "warning:", "last error:")))
    if reason and body.get("state") not in HEALTHY_STATES and not any(str(reason) in fact for fact in facts):
        facts.append(f"reason: {_whole(reason) if verbose else _first_sentence(reason)}")
    return facts


def status_lines(document: dict[str, Any], *, width: int | None, verbose: bool, check: bool = False) -> list[str]:
    """The human status: one line per part fitted to `width`, or with `verbose` every fact in full."""
    failed_now = failed_parts(document)
    footer_parts = []
    if failed_now:
        footer_parts.append(f"failed: {', '.join(failed_now)}" + (" (exit code 1)" if check else ""))
    parts = [(part, document[part]) for part in Part if isinstance(document.get(part), dict)]
    title = _title(document.get("agent", {}), verbose=verbose)
    if not verbose:
        rows = [
            (part, body.get("state", "?"), _ago(body.get("since")), " · ".join(_part_facts(part, body, verbose=False)))
            for part, body in parts
        ]
        footer_parts.append("--verbose shows every detail in full; --json everything")
        columns = [
            text("Part", shrink=Shrink.NEVER),
            text("State", shrink=Shrink.NEVER),
            text("Since", shrink=Shrink.NEVER),
            text("Details", min_width=20),
        ]
        return render(columns, rows, width=width, title=title, footer="\n".join(footer_parts))
    lines = textwrap.wrap(title, width, break_long_words=False, break_on_hyphens=False) if width else [title]
    for part, body in parts:
        lines.append(f"{part:<11} {body.get('state', '?'):<11} {_ago(body.get('since'))}".rstrip())
        for fact in _part_facts(part, body, verbose=True):
            if width:
                lines += textwrap.wrap(
                    fact,
                    width,
                    initial_indent="    ",
                    subsequent_indent="      ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            else:
                lines.append(f"    {fact}")
    return lines + footer_parts[:1]


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        document = _ask(config)
    except CoralError as exc:
        if args.json:  # a script reading stdout gets JSON whatever happened
            print_json({"error": exc.message, "hint": exc.hint, "agent": None})
        raise
    failed = failed_parts(document) if args.check else []
    if args.json:
        print_json(document)
        return EXIT_FAILURE if failed else EXIT_OK
    lines = status_lines(document, width=output_width(wide=False), verbose=args.verbose, check=args.check)
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_FAILURE if failed else EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="show the running agent's parts, states and counters",
        description=(
            "Ask the running agent (over its control socket) for the state of each part. Exit code 0: the agent "
            "answered (with --check: and no part is failed); 1: no agent answers (with --json, stdout then holds "
            "an object with 'error' and 'hint'), or with --check a part is failed."
        ),
    )
    add_config_flag(parser)
    add_json_flag(parser)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a part is failed (for scripts and health checks); without it, 0 means the agent answered",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="every fact in full, one per line (the default fits one line per part: long texts cut to "
        "their first sentence, then to the terminal's width)",
    )
    parser.set_defaults(func=_run)
