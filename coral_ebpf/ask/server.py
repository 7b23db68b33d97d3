"""`coral-ebpf mcp`: the tools of `ask.tools` served over the Model Context Protocol on stdio.

The official SDK derives each tool's JSON schema from the typed signature below; every tool is
read-only (annotated so), answers JSON, and turns a bad argument or a missing agent or database
into a tool error whose text says what was wrong and what to do.

Over a colony (a `FleetBackend`) the same tools take an `agent` argument (one agent, glob with
*) and `list_agents` joins them; over one agent neither is offered.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from coral_ebpf import __version__
from coral_ebpf.ask import tools
from coral_ebpf.ask.backend import AgentState, Backend, FleetBackend
from coral_ebpf.errors import CoralError

INSTRUCTIONS = (
    "Read-only questions about the services on this host, measured by the coral-ebpf agent (eBPF: Beyla or "
    "its built-in engine). Windows are durations such as 15m, 1h or 1d, ending now. Start with list_services, "
    "then red_summary for one service, slow_traces / failed_traces to find trace ids, and get_trace for one "
    "trace's timing. agent_status says whether the agent and its probes work; compare_windows says what got "
    "slower or more error-prone than in the previous window."
)
COLONY_INSTRUCTIONS = (
    "Read-only questions about the services on many hosts, each measured by a coral-ebpf agent (eBPF) and "
    "copied into one colony. Windows are durations such as 15m, 1h or 1d, ending now. Figures add up every "
    "agent's data (histograms merged, never averaged); `agent` narrows any question to one agent (glob with *), "
    "and answers name the agents they came from (by_agent, agents, each span's agent). Start with list_agents "
    "(is every agent polled, how far behind) and list_services (which agents serve what), then red_summary, "
    "slow_traces / failed_traces and get_trace; compare_windows says what got slower or more error-prone."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Window = Annotated[str, Field(description="how far back from now, e.g. 15m, 1h, 1d")]
Service = Annotated[str | None, Field(description="one service name (a '*' makes it a glob); none = all")]
Limit = Annotated[int, Field(ge=1, le=tools.MAX_ITEMS, description="at most this many items")]
Protocol = Literal["http", "grpc", "sql", "messaging"]
Agent = Annotated[str | None, Field(description="one agent id of the colony (a '*' makes it a glob); none = all")]


def _without(function: Callable[..., dict[str, Any]], name: str) -> Callable[..., dict[str, Any]]:
    """`function` with parameter `name` hidden from its signature (and so from the tool's schema)."""
    signature = inspect.signature(function, eval_str=True)
    if name not in signature.parameters:
        return function

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return function(*args, **kwargs)

    parameters = [p for p in signature.parameters.values() if p.name != name]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper


def _answering(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A CoralError (bad argument, no agent and no database, ...) becomes a tool error with its hint."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return function(*args, **kwargs)
        except CoralError as exc:
            raise ToolError(str(exc)) from None

    return wrapper


def build_server(backend: Backend) -> MCPServer:
    fleet = isinstance(backend, FleetBackend)
    server: MCPServer = MCPServer(
        "coral-ebpf-colony" if fleet else "coral-ebpf",
        version=__version__,
        instructions=COLONY_INSTRUCTIONS if fleet else INSTRUCTIONS,
    )

    def tool(description: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
        def register(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
            wrapped = _answering(function)
            if not fleet:  # one agent: no agent to choose
                wrapped = _without(wrapped, "agent")
            server.add_tool(wrapped, description=description, annotations=READ_ONLY, structured_output=True)
            return wrapped

        return register

    @tool(
        "Every service seen in the window: request rate, error rate, p50/p95/p99 (ms), engine, instances "
        "(on a colony: the agents that served it, each with its own figures)."
    )
    def list_services(window: Window = "1h", limit: Limit = tools.MAX_ITEMS, agent: Agent = None) -> dict[str, Any]:
        return tools.list_services(backend, window=window, limit=limit, agent=agent)

    @tool("RED (requests, rate/s, errors, error rate, p50/p95/p99 ms) per route, method or status code.")
    def red_summary(  # noqa: PLR0917 (the SDK derives the tool schema from these parameters)
        service: Service = None,
        window: Window = "15m",
        group_by: Literal["route", "method", "status"] = "route",
        protocol: Protocol = "http",
        limit: Limit = tools.MAX_ITEMS,
        agent: Agent = None,
    ) -> dict[str, Any]:
        return tools.red_summary(
            backend, service=service, window=window, group_by=group_by, protocol=protocol, limit=limit, agent=agent
        )

    @tool("The slowest traces that started in the window, slowest first (trace id, duration, root, status).")
    def slow_traces(
        service: Service = None,
        window: Window = "15m",
        min_duration: Annotated[str | None, Field(description="only traces at least this long, e.g. 500ms")] = None,
        limit: Limit = 10,
        agent: Agent = None,
    ) -> dict[str, Any]:
        return tools.slow_traces(
            backend, service=service, window=window, min_duration=min_duration, limit=limit, agent=agent
        )

    @tool("Traces with at least one failed span that started in the window, newest first.")
    def failed_traces(
        service: Service = None, window: Window = "15m", limit: Limit = 10, agent: Agent = None
    ) -> dict[str, Any]:
        return tools.failed_traces(backend, service=service, window=window, limit=limit, agent=agent)

    @tool("One trace as a waterfall: spans in tree order with depth, start offset, duration, status, attributes.")
    def get_trace(
        trace_id: Annotated[str, Field(description="32 hex digits, or a unique prefix of at least 8")],
        max_spans: Annotated[int, Field(ge=1, le=1000, description="at most this many spans")] = 200,
    ) -> dict[str, Any]:
        return tools.get_trace(backend, trace_id, max_spans=max_spans)

    @tool(
        "Is the colony running and polling; each agent's state (up, failing, unreachable, pending), last seen "
        "and lag; the colony database's size and rows."
        if fleet
        else "Is the agent running; each part's state; the kernel probe's verdicts; Beyla's state and diagnosis."
    )
    def agent_status() -> dict[str, Any]:
        return tools.agent_status(backend)

    @tool("This window against the previous one of the same length: what got slower (p99) or more error-prone.")
    def compare_windows(
        service: Service = None,
        window: Window = "1h",
        protocol: Protocol = "http",
        limit: Limit = 10,
        agent: Agent = None,
    ) -> dict[str, Any]:
        return tools.compare_windows(
            backend, service=service, window=window, protocol=protocol, limit=limit, agent=agent
        )

    if fleet:

        @tool(
            "The colony's agents: address, state (up, failing, unreachable, pending), last seen, seconds since, "
            "rows not copied yet (lag_rows), rows stored, last error, open gaps."
        )
        def list_agents(
            state: Annotated[AgentState | None, Field(description="only agents in this state")] = None,
            limit: Limit = tools.MAX_ITEMS,
        ) -> dict[str, Any]:
            return tools.list_agents(backend, state=state.value if state else None, limit=limit)

    return server
