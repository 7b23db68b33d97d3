"""`coral-ebpf query http|grpc|sql|messaging|traces`: RED metrics and traces from the agent's database.

Parameters are built here; `execute()` runs the query (through the running agent when there
is one, else by opening the database file read-only) and the result is printed as a table
or, with --json, as JSON: RED kinds print the list of rows, `traces` the list of traces.
"""

from __future__ import annotations

import argparse
from typing import Any

from coral_ebpf.agent.config import AgentConfig
from coral_ebpf.agent.control_client import ControlClient
from coral_ebpf.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    config_from_args,
    print_error,
    print_json,
)
from coral_ebpf.cli.query_advice import Situation, engine_advice
from coral_ebpf.cli.query_output import print_agent_breakdown, print_red, print_traces
from coral_ebpf.cli.query_views import print_timeline, print_waterfall
from coral_ebpf.cli.table import output_width
from coral_ebpf.errors import CoralError
from coral_ebpf.query.params import TRACE_SORTS, QueryError, RedParams, TraceParams
from coral_ebpf.units import parse_duration

RATE_HELP = (
    "Rate/s = requests / the seconds of the --since window covered by data: from the later of the window\n"
    "start and the earliest stored data of that protocol (any service) to now. Every row of one answer\n"
    "shares that denominator, like PromQL's rate(), so rows compare; --by buckets divide by the part of\n"
    "each bucket that is covered."
)


def execute(config: AgentConfig, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one query and return its JSON-ready result.

    A running agent owns the database file, so when its control socket answers the query runs
    inside the agent; otherwise the file is opened read-only here.
    """
    client = ControlClient(config.control.socket)
    if client.available():
        result: dict[str, Any] = client.query(kind, params)
        return result
    # duckdb is imported only when the CLI reads the file itself (no agent running).
    from coral_ebpf.query.dispatch import run_query
    from coral_ebpf.storage.database import open_read_only

    connection = open_read_only(config.storage.path)
    try:
        return run_query(connection, kind, params)
    finally:
        connection.close()


def situation(config: AgentConfig) -> Situation:
    """What serves which protocol here: the running agent's status when it answers, else only the config."""
    client = ControlClient(config.control.socket)
    try:
        status = client.status() if client.available() else None
    except CoralError:
        status = None
    return Situation.gather(config, status)


def execute_on_colony(path: str | None, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A fleet query: through the running colony, else on its database file read-only."""
    from coral_ebpf.cli.colony import colony_config

    config = colony_config(path)
    client = ControlClient(config.control_socket)
    if client.available():
        result: dict[str, Any] = client.query(kind, params)
        return result
    from coral_ebpf.colony.queries import fleet_query
    from coral_ebpf.storage.database import open_read_only

    connection = open_read_only(config.database)
    try:
        return fleet_query(connection, kind, params)
    finally:
        connection.close()


def _duration_text(flag: str, value: str) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise QueryError(f"{flag}: {exc}") from None
    return value


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"since": _duration_text("--since", args.since)}
    for name in ("service", "instance", "route", "method", "operation", "table", "side", "trace_id", "agent", "status"):
        value = getattr(args, name, None)
        if value:
            params[name] = value
    if getattr(args, "by", None):
        params["by"] = _duration_text("--by", args.by)
    if args.kind == "traces" and args.format == "waterfall":
        if not args.trace_id:
            raise QueryError("--format waterfall shows one trace: give --trace-id")
        return {"trace_id": args.trace_id}
    if args.kind == "traces":
        params["limit"] = args.limit
        if args.min_duration:
            params["min_duration"] = _duration_text("--min-duration", args.min_duration)
        params["with_spans"] = _output_format(args) in ("tree", "json")
        if args.sort != "start":
            params["sort"] = args.sort
    return params


def _output_format(args: argparse.Namespace) -> str:
    if getattr(args, "json", False):
        return "json"
    return str(getattr(args, "format", None) or "table")


def _run(args: argparse.Namespace) -> int:
    on_colony = getattr(args, "colony", None) is not None
    if getattr(args, "agent", None) and not on_colony:
        print_error("--agent selects one agent of a colony: use it with --colony")
        return EXIT_USAGE
    try:
        params = _params(args)
        if args.kind != "traces":
            RedParams.from_dict(params)
        elif "trace_id" not in params or len(params) > 1:
            TraceParams.from_dict(params)
    except QueryError as exc:
        print_error(str(exc))
        return EXIT_USAGE

    def run(kind: str) -> dict[str, Any]:
        if on_colony:
            return execute_on_colony(args.colony or None, kind, params)
        return execute(config_from_args(args), kind, params)

    output = _output_format(args)
    width = output_width(wide=args.wide)
    if args.kind == "traces" and args.format == "waterfall":
        trace = run("waterfall")["trace"]
        if output == "json":
            print_json(trace)
        else:
            print_waterfall(trace)
        return EXIT_OK
    result = run(args.kind)

    def advice() -> list[str]:
        if on_colony:
            return ["The colony holds what its agents' pull API served; check 'coral-ebpf colony status'."]
        return engine_advice(args.kind, situation(config_from_args(args)))

    if "by" in params:
        if output == "json":
            print_json({key: result[key] for key in ("by", "window", "side", "buckets", "series")})
        elif output == "tsv":
            print_error("--by draws sparklines: use --json for its numbers")
            return EXIT_USAGE
        else:
            print_timeline(result, params, width=width)
        return EXIT_OK
    if args.kind == "traces":
        if output == "json":
            print_json(result["traces"])
        else:
            print_traces(result, params, tree=output == "tree", width=width, tsv=output == "tsv", advice=advice)
        if params.get("trace_id") and not result["traces"]:
            print_error(f"no stored trace has the id {params['trace_id']!r} (retention may have removed it)")
            return EXIT_FAILURE
    elif output == "json":
        # On a colony the per-agent breakdown comes with the rows.
        print_json(
            {"rows": result["rows"], "overall": result["overall"], "by_agent": result["by_agent"]}
            if on_colony
            else result["rows"]
        )
    else:
        print_red(result, params, width=width, tsv=output == "tsv", advice=advice)
        if on_colony and output != "tsv":
            print_agent_breakdown(result, width=width)
    return EXIT_OK


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="agent configuration (default /etc/coral-ebpf/config.yaml; built-in defaults if absent)",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    parser.add_argument("--since", default="15m", metavar="DURATION", help="how far back to look (default 15m)")
    parser.add_argument("--service", metavar="NAME", help="only this service (glob with *)")
    parser.add_argument(
        "--instance",
        metavar="ID",
        help="only this instance of a service: its service.instance.id, <host>:<pid> (glob with *)",
    )
    parser.add_argument(
        "--colony",
        nargs="?",
        const="",
        metavar="FILE",
        help="query the colony's fleet database (its config FILE, default /etc/coral-ebpf/colony.yaml)",
    )
    parser.add_argument("--agent", metavar="ID", help="with --colony: only this agent (glob with *)")
    parser.add_argument(
        "--wide",
        action="store_true",
        help="every column in full (default: fit the terminal; long names shortened in the middle; "
        "piped output is never shortened unless COLUMNS is set)",
    )


def _by_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        metavar="DURATION",
        help="RED per time bucket of this size (e.g. 1m), with sparklines for rate, errors and p99",
    )


def _side_flag(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--side",
        choices=("server", "client", "producer", "consumer", "all"),
        help=f"which side of the calls to count (default {default})",
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "query",
        help="RED metrics and traces for the services on this host",
        description="Query the agent's database: per-route RED metrics (http, grpc, sql, messaging) and traces.",
        epilog=RATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="agent configuration")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", parser_class=type(parser))
    kinds.required = True

    http = kinds.add_parser("http", help="HTTP requests per service, method and route")
    _common_flags(http)
    http.add_argument("--route", help="only this route (glob with *), e.g. '/api/users/*'")
    http.add_argument("--method", help="only this HTTP method")
    http.add_argument(
        "--status",
        metavar="CLASS",
        help="only responses of this status class (2xx, 3xx, 4xx, 5xx) or code (e.g. 404); "
        "errors count 5xx (and no response), 4xx have their own column",
    )
    _side_flag(http, "server")

    grpc = kinds.add_parser("grpc", help="gRPC calls per service and method")
    _common_flags(grpc)
    grpc.add_argument("--method", "--route", dest="method", help="only this method, e.g. '/pkg.Svc/Get' (glob with *)")
    _side_flag(grpc, "server")

    sql = kinds.add_parser("sql", help="database calls per service, operation and table")
    _common_flags(sql)
    sql.add_argument("--operation", help="only this operation, e.g. SELECT")
    sql.add_argument("--table", "--route", dest="table", help="only this table or collection (glob with *)")
    _side_flag(sql, "client")

    messaging = kinds.add_parser("messaging", help="messaging publish/process per service and destination")
    _common_flags(messaging)
    messaging.add_argument("--operation", help="only this operation, e.g. publish")
    messaging.add_argument("--destination", "--route", dest="table", help="only this topic or queue")
    _side_flag(messaging, "all")

    traces = kinds.add_parser("traces", help="recent traces: a table, an indented tree, or JSON")
    _common_flags(traces)
    traces.add_argument("--trace-id", metavar="ID", help="one trace (32 hex digits, or a prefix of at least 8)")
    traces.add_argument("--min-duration", metavar="DURATION", help="only traces at least this long, e.g. 500ms")
    traces.add_argument("--limit", type=int, default=20, metavar="N", help="at most N traces (default 20)")
    traces.add_argument(
        "--format",
        choices=("table", "tree", "waterfall", "tsv", "json"),
        default="table",
        help="output format (waterfall: one trace's spans on a time bar; needs --trace-id; tsv: for scripts)",
    )
    traces.add_argument(
        "--sort",
        choices=TRACE_SORTS,
        default="start",
        help="start: newest first (default); duration: longest first",
    )
    for red_kind in (http, grpc, sql, messaging):
        _by_flag(red_kind)
        red_kind.add_argument(
            "--format",
            choices=("table", "tsv", "json"),
            default="table",
            help="table (default), tsv (tab-separated JSON fields, for scripts) or json (same as --json)",
        )
        red_kind.epilog = RATE_HELP
        red_kind.formatter_class = argparse.RawDescriptionHelpFormatter

    for sub in (http, grpc, sql, messaging, traces):
        sub.set_defaults(func=_run)
