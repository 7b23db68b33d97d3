"""The pull API's gRPC server on the agent: `QueryEbpfMetrics` and `GetAgentInfo`.

Queries run on a reader connection of the agent's own database (DuckDB lets one process hold
the file; readers in that process see committed rows), one connection per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import duckdb
import grpc

from coral_ebpf import __version__
from coral_ebpf.errors import CoralError
from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from coral_ebpf.pullapi.convert import ENCODERS
from coral_ebpf.pullapi.security import TokenCheck, read_token
from coral_ebpf.pullapi.settings import ColonyApiSettings
from coral_ebpf.state import PartState
from coral_ebpf.storage.database import read_metadata
from coral_ebpf.storage.pull import min_seq_id, rows_after, seq_ranges
from coral_ebpf.units import parse_endpoint

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS = 10_000
MAX_RECORDS_CAP = 50_000
# Responses of 50,000 rows with 16-bucket histograms run to ~15 MB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WORKERS = 2

_TYPE_KINDS = {pb.EBPF_METRIC_TYPE_HTTP: "http", pb.EBPF_METRIC_TYPE_GRPC: "grpc", pb.EBPF_METRIC_TYPE_SQL: "sql"}
_RESPONSE_FIELDS = {
    "http": ("http_metrics", "http_max_seq_id", "http_min_seq_id", "http_start_seq_id"),
    "grpc": ("grpc_metrics", "grpc_max_seq_id", "grpc_min_seq_id", "grpc_start_seq_id"),
    "sql": ("sql_metrics", "sql_max_seq_id", "sql_min_seq_id", "sql_start_seq_id"),
    "traces": ("trace_spans", "traces_max_seq_id", "traces_min_seq_id", "traces_start_seq_id"),
}

Reader = Callable[[], duckdb.DuckDBPyConnection]


class RequestError(ValueError):
    """A request the API refuses (INVALID_ARGUMENT)."""


def record_limit(requested: int) -> int:
    """`max_records`: 0 means the default 10,000; more than 50,000 is capped; negative is refused."""
    if requested < 0:
        raise RequestError(f"max_records must not be negative (got {requested})")
    return min(requested or DEFAULT_MAX_RECORDS, MAX_RECORDS_CAP)


def answer_query(
    connection: duckdb.DuckDBPyConnection, request: pb.QueryEbpfMetricsRequest, agent_id: str
) -> pb.QueryEbpfMetricsResponse:
    """The response to one QueryEbpfMetrics request, read from `connection`."""
    if request.trace_id:
        raise RequestError("trace_id lookups are not served by the pull API; use 'coral-ebpf query traces'")
    limit = record_limit(request.max_records)
    unknown = [t for t in request.metric_types if t not in _TYPE_KINDS]
    if unknown:
        raise RequestError(f"unknown metric_types {unknown}; known: 1 (HTTP), 2 (GRPC), 3 (SQL)")
    kinds = [_TYPE_KINDS[t] for t in request.metric_types] or ["http", "grpc", "sql"]
    kinds = list(dict.fromkeys(kinds))
    if request.include_traces:
        if request.max_traces < 0:
            raise RequestError(f"max_traces must not be negative (got {request.max_traces})")
        kinds.append("traces")
    response = pb.QueryEbpfMetricsResponse(
        session_id=read_metadata(connection).get("session_id", ""), agent_id=agent_id
    )
    services = list(request.service_names)
    for kind in kinds:
        repeated, max_field, min_field, start_field = _RESPONSE_FIELDS[kind]
        kind_limit = min(request.max_traces or limit, MAX_RECORDS_CAP) if kind == "traces" else limit
        batch = rows_after(connection, kind, getattr(request, start_field), kind_limit, services)
        encode = ENCODERS[kind]
        getattr(response, repeated).extend(encode(row) for row in batch.rows)
        setattr(response, max_field, batch.max_seq_id)
        setattr(response, min_field, min_seq_id(connection, kind))
        response.more = response.more or batch.more
    response.total_metrics = len(response.http_metrics) + len(response.grpc_metrics) + len(response.sql_metrics)
    response.total_traces = len(response.trace_spans)
    return response


def agent_info(connection: duckdb.DuckDBPyConnection, agent_id: str, started: float) -> pb.AgentInfo:
    info = pb.AgentInfo(
        agent_id=agent_id,
        version=__version__,
        session_id=read_metadata(connection).get("session_id", ""),
        started_unix_nano=int(started * 1e9),
    )
    for seq_range in seq_ranges(connection):
        info.data.add(
            type=seq_range.kind,
            min_seq_id=seq_range.min_seq_id,
            max_seq_id=seq_range.max_seq_id,
            rows=seq_range.rows,
            oldest_unix_nano=seq_range.oldest_ns,
            newest_unix_nano=seq_range.newest_ns,
        )
    return info


class _Servicer(pb_grpc.AgentServiceServicer):
    def __init__(self, server: PullApiServer) -> None:
        self._server = server

    def _with_reader(self, context: grpc.ServicerContext, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        self._server.count_call()
        try:
            connection = self._server.reader()
        except Exception as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"the agent's storage is not open: {exc}")
        try:
            return work(connection)
        except RequestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except duckdb.Error as exc:
            log.warning("pull API query failed", extra={"fields": {"error": str(exc)}})
            context.abort(grpc.StatusCode.INTERNAL, f"reading the database failed: {exc}")
        finally:
            connection.close()

    def QueryEbpfMetrics(self, request: pb.QueryEbpfMetricsRequest, context: grpc.ServicerContext) -> Any:
        return self._with_reader(context, lambda c: answer_query(c, request, self._server.agent_id))

    def GetAgentInfo(self, request: pb.GetAgentInfoRequest, context: grpc.ServicerContext) -> Any:
        return self._with_reader(context, lambda c: agent_info(c, self._server.agent_id, self._server.started))


class PullApiServer:
    """The agent part `colony_api`: serves the pull API on `colony_api.endpoint`."""

    name = "colony_api"

    def __init__(self, settings: ColonyApiSettings, reader: Reader, agent_id: str) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        self.reader = reader
        self.agent_id = agent_id
        self.started = time.time()
        self.address: str | None = None
        self._server: grpc.Server | None = None
        self._calls = 0
        self._last_call: float | None = None
        self._lock = threading.Lock()

    def count_call(self) -> None:
        with self._lock:
            self._calls += 1
            self._last_call = time.time()

    def start(self) -> None:
        settings = self.settings
        assert settings.endpoint is not None
        interceptors = []
        if settings.token_file is not None:
            interceptors.append(TokenCheck(read_token(settings.token_file, "colony_api.token_file")))
        credentials = settings.tls.credentials("colony_api.tls") if settings.tls is not None else None
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="pull-api"),
            interceptors=interceptors,
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)],
        )
        pb_grpc.add_AgentServiceServicer_to_server(_Servicer(self), server)
        host, port = parse_endpoint(settings.endpoint)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
        except RuntimeError:
            bound = 0
        if bound == 0:
            server.stop(None)
            raise CoralError(
                f"cannot listen for the pull API on {settings.endpoint}: address in use or not available",
                "free the port, or set colony_api.endpoint to another host:port",
            )
        server.start()
        self._server = server
        self.address = f"{bind.rsplit(':', 1)[0]}:{bound}"
        log.info("pull API listening", extra={"fields": {"address": self.address, "tls": credentials is not None}})

    def stop(self, timeout: float) -> None:
        if self._server is not None:
            self._server.stop(min(timeout, 5.0)).wait(timeout)
            self._server = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            calls, last_call = self._calls, self._last_call
        return {
            "state": PartState.RUNNING,
            "since": self.started,
            "address": self.address,
            "tls": self.settings.tls is not None,
            "mtls": self.settings.tls is not None and self.settings.tls.client_ca is not None,
            "token": self.settings.token_file is not None,
            "calls": calls,
            "last_call": last_call,
        }
