"""The agent's pull API (issue 16) against a real `coral-ebpf start`: rows by seq_id, limits,
filters, histograms with +Inf, request_count, process_pid, session_id, GetAgentInfo, and
wire compatibility with message classes built from the Go agent's field numbers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from tests.helpers.agent_process import AgentProcess
from tests.helpers.fleet import BOUNDS, pull_address, pull_agent, query, send_http, send_spans

MIX = {("GET", "/x", 200): (30, 0.02), ("GET", "/x", 500): (4, 0.3), ("POST", "/y", 201): (6, 20.0)}
SENT = sum(count for count, _ in MIX.values())


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    running = pull_agent(tmp_path_factory.mktemp("pull-api"), "pull-1")
    try:
        running.start(timeout=120)
        send_http(running, "shop", MIX)
        send_http(running, "other", {("GET", "/z", 200): (3, 0.001)})
        send_spans(running, "shop", 7)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = query(pull_address(running), pb.QueryEbpfMetricsRequest(include_traces=True))
            if response.total_traces >= 7 and response.total_metrics >= 4:
                break
            time.sleep(0.2)
        yield running
        running.stop()
    finally:
        running.kill()


def test_rows_carry_seq_ids_every_bucket_and_request_count(agent: AgentProcess) -> None:
    response = query(pull_address(agent), pb.QueryEbpfMetricsRequest(include_traces=True))
    rows = list(response.http_metrics)
    assert [r.seq_id for r in rows] == sorted(r.seq_id for r in rows) and rows[0].seq_id >= 1
    assert response.http_max_seq_id == rows[-1].seq_id
    shop = [r for r in rows if r.service_name == "shop"]
    assert sum(r.request_count for r in shop) == SENT
    for row in rows:
        assert len(row.latency_counts) == len(row.latency_buckets) + 1  # +Inf included
        assert sum(row.latency_counts) == row.request_count
        assert list(row.detail.bounds_s) == list(BOUNDS)
        assert row.latency_buckets == pytest.approx([b * 1000 for b in BOUNDS])
    slow = next(r for r in shop if r.http_route == "/y")
    assert slow.latency_counts[-1] == 6  # 20 s is past the last bound: the +Inf bucket
    assert slow.http_status_code == 201 and slow.HasField("http_status_code")
    spans = list(response.trace_spans)
    assert len(spans) == 7 and all(s.process_pid == 4242 for s in spans)
    assert all(len(s.trace_id) == 32 and len(s.span_id) == 16 for s in spans)
    assert response.traces_max_seq_id == spans[-1].seq_id
    assert response.total_metrics == len(rows) and response.total_traces == 7
    assert response.agent_id == "pull-1"


def test_session_id_is_the_database_one(agent: AgentProcess) -> None:
    response = query(pull_address(agent), pb.QueryEbpfMetricsRequest())
    assert len(response.session_id) == 36
    assert query(pull_address(agent), pb.QueryEbpfMetricsRequest()).session_id == response.session_id


def test_start_seq_ids_max_records_and_filters(agent: AgentProcess) -> None:
    address = pull_address(agent)
    everything = query(address, pb.QueryEbpfMetricsRequest(include_traces=True))
    first = query(address, pb.QueryEbpfMetricsRequest(max_records=2, include_traces=True))
    assert [r.seq_id for r in first.http_metrics] == [r.seq_id for r in everything.http_metrics[:2]]
    assert len(first.trace_spans) == 2 and first.more
    rest = query(
        address,
        pb.QueryEbpfMetricsRequest(
            http_start_seq_id=first.http_max_seq_id,
            traces_start_seq_id=first.traces_max_seq_id,
            include_traces=True,
        ),
    )
    assert [r.seq_id for r in first.http_metrics] + [r.seq_id for r in rest.http_metrics] == [
        r.seq_id for r in everything.http_metrics
    ]
    assert len(rest.trace_spans) == 5 and not rest.more
    # Nothing new after the last seq id: the max stays where the caller is.
    after = query(address, pb.QueryEbpfMetricsRequest(http_start_seq_id=everything.http_max_seq_id))
    assert not after.http_metrics and after.http_max_seq_id == everything.http_max_seq_id
    only_other = query(address, pb.QueryEbpfMetricsRequest(service_names=["other"]))
    assert {r.service_name for r in only_other.http_metrics} == {"other"}
    grpc_only = query(address, pb.QueryEbpfMetricsRequest(metric_types=[pb.EBPF_METRIC_TYPE_GRPC]))
    assert not grpc_only.http_metrics and not grpc_only.trace_spans
    assert not query(address, pb.QueryEbpfMetricsRequest()).trace_spans  # include_traces false


def test_bad_requests_get_invalid_argument(agent: AgentProcess) -> None:
    address = pull_address(agent)
    for request in (
        pb.QueryEbpfMetricsRequest(max_records=-1),
        pb.QueryEbpfMetricsRequest(metric_types=[7]),  # type: ignore[list-item]
        pb.QueryEbpfMetricsRequest(trace_id="abc"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            query(address, request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert agent.status()["colony_api"]["state"] == "running"


def test_agent_info(agent: AgentProcess) -> None:
    with grpc.insecure_channel(pull_address(agent)) as channel:
        info = pb_grpc.AgentServiceStub(channel).GetAgentInfo(pb.GetAgentInfoRequest(), timeout=10)
    assert info.agent_id == "pull-1" and info.version
    assert info.session_id == query(pull_address(agent), pb.QueryEbpfMetricsRequest()).session_id
    ranges = {d.type: d for d in info.data}
    assert set(ranges) == {"http", "grpc", "sql", "traces"}
    assert ranges["traces"].rows == 7 and ranges["traces"].min_seq_id >= 1
    assert ranges["http"].max_seq_id >= ranges["http"].min_seq_id >= 1
    assert ranges["grpc"].rows == 0


def _go_classes(tmp: Path) -> dict[str, Any]:
    """Message classes compiled at run time from tests/data/go_agent_subset.proto, in a private pool."""
    source = Path(__file__).resolve().parents[1] / "data"
    descriptor_set = tmp / "go.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{source}",
            f"--descriptor_set_out={descriptor_set}",
            "go_agent_subset.proto",
        ],
        check=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    names = ("QueryEbpfMetricsRequest", "QueryEbpfMetricsResponse")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"coral.agent.v1.{n}")) for n in names}


def test_wire_compatible_with_the_go_field_numbers(agent: AgentProcess, tmp_path: Path) -> None:
    go = _go_classes(tmp_path)
    # A Go-built request, sent as raw bytes to the method path the Go agent serves.
    request = go["QueryEbpfMetricsRequest"](include_traces=True, max_records=3, http_start_seq_id=0)
    with grpc.insecure_channel(pull_address(agent)) as channel:
        call = channel.unary_unary(
            "/coral.agent.v1.AgentService/QueryEbpfMetrics",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=go["QueryEbpfMetricsResponse"].FromString,
        )
        response = call(request, timeout=20)
    ours = query(pull_address(agent), pb.QueryEbpfMetricsRequest(include_traces=True, max_records=3))
    assert len(response.http_metrics) == 3 and len(response.trace_spans) == 3
    assert response.session_id == ours.session_id
    assert response.http_max_seq_id == ours.http_max_seq_id == response.http_metrics[-1].seq_id
    assert response.traces_max_seq_id == ours.traces_max_seq_id
    for theirs, mine in zip(response.http_metrics, ours.http_metrics, strict=True):
        assert theirs.seq_id == mine.seq_id >= 1
        assert theirs.request_count == mine.request_count == sum(theirs.latency_counts) > 0
        assert list(theirs.latency_counts) == list(mine.latency_counts)
        assert theirs.http_route == mine.http_route and theirs.timestamp == mine.timestamp
        assert theirs.http_status_code == mine.http_status_code
        assert theirs.attributes["http.route"] == mine.http_route
    for their_span, my_span in zip(response.trace_spans, ours.trace_spans, strict=True):
        assert their_span.process_pid == 4242 and their_span.seq_id == my_span.seq_id
        assert their_span.trace_id == my_span.trace_id and their_span.duration_us == my_span.duration_us
    # Our additions (fields >= 100) are unknown to the Go classes, which skip them (and keep them
    # as unknown fields: re-encoded, they decode again with our classes).
    again = pb.EbpfHttpMetric.FromString(response.http_metrics[0].SerializeToString())
    assert list(again.detail.bounds_s) == list(BOUNDS)
