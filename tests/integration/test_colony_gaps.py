"""Sequence gaps (issue 16): detected, retried, reported, never silently skipped.

A pull API server in this process serves an agent database whose seq ids have holes (rows
laid out by hand); the colony's poller reads it over gRPC on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from coral_ebpf.colony.poller import Poller
from coral_ebpf.colony.settings import AgentTarget, ColonyConfig, PollSettings
from coral_ebpf.colony.store import ColonyStore, gaps_list
from coral_ebpf.pullapi.server import PullApiServer
from coral_ebpf.pullapi.settings import ColonyApiSettings
from coral_ebpf.storage.database import open_for_writing, use_database
from tests.helpers.pull_rows import http_row, insert_agent_rows, span_row

ONE = [1, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.fixture
def agent_db(tmp_path: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    connection = open_for_writing(tmp_path / "agent.duckdb")
    server = PullApiServer(
        ColonyApiSettings(endpoint="127.0.0.1:0"), lambda: use_database(connection.cursor()), "gappy"
    )
    server.start()
    try:
        assert server.address is not None
        yield connection, server.address
    finally:
        server.stop(5)
        connection.close()


def _poller(tmp_path: Path, address: str) -> Poller:
    config = ColonyConfig(
        source="test",
        state_dir=tmp_path / "colony",
        database=tmp_path / "colony" / "colony.duckdb",
        control_socket=tmp_path / "colony.sock",
        poll=PollSettings(timeout=5, gap_retries=2),
        agents=(AgentTarget("gappy", address),),
    )
    return Poller(config, ColonyStore(config.database))


def _requests(poller: Poller) -> int:
    row = poller.store.cursor().execute("SELECT sum(count) FROM beyla_http_metrics").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def test_gaps_are_retried_recovered_or_reported(
    tmp_path: Path, agent_db: tuple[duckdb.DuckDBPyConnection, str]
) -> None:
    connection, address = agent_db
    insert_agent_rows(connection, "http", [http_row(seq, ONE, route=f"/{seq}") for seq in (1, 2, 5, 8)])
    # Spans 1-3 were deleted by the agent's retention before the colony first looked.
    insert_agent_rows(connection, "traces", [span_row(seq, span_id=seq) for seq in (4, 5)])
    poller = _poller(tmp_path, address)
    [target] = poller.targets()
    result = poller.poll_agent(target)
    assert result.ok and result.rows == 6
    gaps = {(g["type"], g["from_seq_id"], g["to_seq_id"]): g for g in gaps_list(poller.store.cursor())}
    assert gaps[("http", 3, 4)]["state"] == "open" and gaps[("http", 6, 7)]["state"] == "open"
    assert gaps[("traces", 1, 3)]["state"] == "expired" and "retention" in gaps[("traces", 1, 3)]["reason"]
    # 6 and 7 commit late (they were in flight): the next poll's retry stores them, once.
    insert_agent_rows(connection, "http", [http_row(seq, ONE, route=f"/{seq}") for seq in (6, 7)])
    # 3 appears, 4 never does.
    insert_agent_rows(connection, "http", [http_row(3, ONE, route="/3")])
    # Span 7 arrives before span 6.
    insert_agent_rows(connection, "traces", [span_row(7, span_id=7)])
    assert poller.poll_agent(target).ok
    by_start = {(g["type"], g["from_seq_id"]): g for g in gaps_list(poller.store.cursor())}
    assert by_start[("http", 6)]["state"] == "recovered" and by_start[("http", 6)]["recovered_rows"] == 2
    assert by_start[("http", 3)]["state"] == "open" and by_start[("http", 3)]["recovered_rows"] == 1
    assert by_start[("traces", 6)]["state"] == "open"
    insert_agent_rows(connection, "traces", [span_row(6, span_id=6)])
    assert poller.poll_agent(target).ok
    assert {(g["type"], g["from_seq_id"]): g for g in gaps_list(poller.store.cursor())}[("traces", 6)][
        "state"
    ] == "recovered"
    gap = {(g["type"], g["from_seq_id"]): g for g in gaps_list(poller.store.cursor())}[("http", 3)]
    spans = (
        poller.store.cursor().execute("SELECT list(agent_seq_id ORDER BY agent_seq_id) FROM otel_spans_raw").fetchone()
    )
    assert spans is not None and spans[0] == [4, 5, 6, 7]
    assert gap["state"] == "permanent" and gap["retries"] == 2 and "1 seq ids never appeared" in gap["reason"]
    assert _requests(poller) == 7  # 1, 2, 3, 5, 6, 7, 8: each once
    # More polls change nothing.
    assert poller.poll_agent(target).rows == 0 and _requests(poller) == 7
    state = poller.states()["gappy"]
    assert state.lag_rows == 0 and state.consecutive_failures == 0
    poller.close()
    poller.store.close()
