"""The colony's parts without processes: row <-> message conversion, the store's exactly-once
transactions, gaps, retention, the Go-shaped views, and the configuration."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from coral_ebpf.colony.poller import find_gaps
from coral_ebpf.colony.settings import ColonyConfig, all_agents, load_colony_config
from coral_ebpf.colony.store import ColonyStore, status_document
from coral_ebpf.errors import ConfigError
from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi.convert import DECODERS, ENCODERS
from coral_ebpf.pullapi.security import read_token
from coral_ebpf.pullapi.server import DEFAULT_MAX_RECORDS, MAX_RECORDS_CAP, RequestError, answer_query, record_limit
from coral_ebpf.storage.database import open_for_writing
from tests.helpers.pull_rows import http_row, insert_agent_rows, span_row


def test_rows_survive_the_wire_both_ways() -> None:
    for kind, row in (("http", http_row(5, [1, 2, 0, 0, 0, 0, 0, 0, 3])), ("traces", span_row(9))):
        message = ENCODERS[kind](row)
        decoded = DECODERS[kind](type(message).FromString(message.SerializeToString()), "agent")
        assert decoded == row


def test_a_go_message_without_our_fields_decodes() -> None:
    message = pb.EbpfHttpMetric(
        timestamp=1_700_000_000_000,
        service_name="s",
        http_route="/x",
        http_status_code=200,
        latency_buckets=[5.0, 10.0],
        latency_counts=[3, 4],
        request_count=0,
        seq_id=4,
    )
    row = DECODERS["http"](message, "go-agent")
    assert row["bounds_s"] == [0.005, 0.01] and row["bucket_counts"] == [3, 4, 0]  # +Inf added
    assert row["count"] == 7  # the Go agent sends request_count 0: recomputed from the buckets
    assert row["timestamp"] == row["start_time"] == 1_700_000_000_000 * 1_000_000


def test_max_records_default_cap_and_negative() -> None:
    assert record_limit(0) == DEFAULT_MAX_RECORDS == 10_000
    assert record_limit(999_999) == MAX_RECORDS_CAP == 50_000
    assert record_limit(7) == 7
    with pytest.raises(RequestError):
        record_limit(-1)


def test_answer_query_pages_by_seq_id(tmp_path: Path) -> None:
    connection = open_for_writing(tmp_path / "agent.duckdb")
    insert_agent_rows(connection, "http", [http_row(seq, [1, 0, 0, 0, 0, 0, 0, 0, 0]) for seq in (1, 2, 5)])
    first = answer_query(connection, pb.QueryEbpfMetricsRequest(max_records=2), "a")
    assert [m.seq_id for m in first.http_metrics] == [1, 2] and first.more and first.http_max_seq_id == 2
    rest = answer_query(connection, pb.QueryEbpfMetricsRequest(http_start_seq_id=2), "a")
    assert [m.seq_id for m in rest.http_metrics] == [5] and not rest.more and rest.http_min_seq_id == 1
    connection.close()


def test_find_gaps_open_and_expired() -> None:
    assert find_gaps("http", 0, [1, 2, 3], 1) == []
    assert find_gaps("http", 2, [3, 6, 7, 10], 1) == [("http", 4, 5, "open", None), ("http", 8, 9, "open", None)]
    expired = find_gaps("sql", 0, [8, 9], 5)
    assert expired[0][:4] == ("sql", 1, 4, "expired") and expired[1] == ("sql", 5, 7, "open", None)


def _store(tmp_path: Path) -> ColonyStore:
    return ColonyStore(tmp_path / "colony.duckdb")


def _requests(store: ColonyStore) -> int:
    row = store.cursor().execute("SELECT coalesce(sum(count), 0) FROM beyla_http_metrics").fetchone()
    return int(row[0]) if row else 0


def test_store_is_exactly_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.reset_session("a", "s1")
    rows = [http_row(seq, [1, 1, 0, 0, 0, 0, 0, 0, 0], agent_id="a") for seq in (1, 2, 3)]
    assert store.store("a", "s1", {"http": rows}, {"http": 3}) == 3
    assert store.store("a", "s1", {"http": rows}, {"http": 3}) == 0  # a re-poll adds nothing
    assert _requests(store) == 6 and store.checkpoints("a")["http"].last_seq_id == 3
    # The same seq ids from a new database of the agent are other rows.
    store.reset_session("a", "s2")
    assert store.checkpoints("a")["http"].last_seq_id == 0
    assert store.store("a", "s2", {"http": rows[:1]}, {"http": 1}) == 1
    assert _requests(store) == 8
    store.close()


def test_rows_and_checkpoint_commit_together(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.reset_session("a", "s1")
    good = http_row(1, [1, 0, 0, 0, 0, 0, 0, 0, 0], agent_id="a")
    bad = {**http_row(2, [1, 0, 0, 0, 0, 0, 0, 0, 0], agent_id="a"), "service_name": None}  # NOT NULL
    with pytest.raises(duckdb.Error):
        store.store("a", "s1", {"http": [good, bad]}, {"http": 2})
    assert _requests(store) == 0 and store.checkpoints("a")["http"].last_seq_id == 0
    store.close()


def test_gaps_retention_views_and_status(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.reset_session("a", "s1")
    old = time.time() - 20 * 86400
    rows = [
        http_row(1, [1, 0, 0, 0, 0, 0, 0, 0, 2], agent_id="a", at=old),
        http_row(4, [0, 3, 0, 0, 0, 0, 0, 0, 0], agent_id="a"),
    ]
    spans = [span_row(1, agent_id="a", at=time.time() - 8 * 86400), span_row(2, span_id=2, agent_id="a")]
    store.store(
        "a", "s1", {"http": rows, "traces": spans}, {"http": 4, "traces": 2}, gaps=find_gaps("http", 0, [1, 4], 1)
    )
    [gap] = store.open_gaps("a", "s1")
    assert (gap.from_seq_id, gap.to_seq_id) == (2, 3)
    store.fill_gap("a", gap, [http_row(2, [1, 0, 0, 0, 0, 0, 0, 0, 0], agent_id="a")], "open", None)
    assert _requests(store) == 7
    store.record_poll("a", "127.0.0.1:1", session_id="s1", last_success=time.time(), lag_rows=0)
    document = status_document(store.cursor(), store.path)
    [agent] = document["agents"]
    assert agent["gaps"]["open"] == 1 and agent["checkpoints"]["http"]["last_seq_id"] == 4
    # The Go colony's shape: one row per bucket, +Inf as infinity.
    buckets = (
        store.cursor()
        .execute("SELECT latency_bucket_ms, count FROM beyla_http_metrics_buckets WHERE count > 0 ORDER BY 1")
        .fetchall()
    )
    assert (5.0, 1) in buckets and (float("inf"), 2) in buckets
    # Retention per type: HTTP keeps 30 days (the 20-day-old row stays), traces 7 days.
    deleted = store.delete_expired({"http": 30 * 86400, "grpc": 30 * 86400, "sql": 14 * 86400, "traces": 7 * 86400})
    assert deleted == {"http": 0, "grpc": 0, "sql": 0, "traces": 1}
    assert store.delete_expired({"http": 10 * 86400, "grpc": 1, "sql": 1, "traces": 7 * 86400})["http"] == 1
    store.close()


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    os.chmod(token, 0o640)
    with pytest.raises(ConfigError, match="mode 0640"):
        read_token(token, "colony_api.token_file")
    os.chmod(token, 0o600)
    assert read_token(token, "colony_api.token_file") == "0123456789abcdef0123"
    token.write_text("short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        read_token(token, "k")


def test_colony_config_and_agents_dir(tmp_path: Path) -> None:
    directory = tmp_path / "agents.d"
    directory.mkdir()
    (directory / "one.yaml").write_text("id: one\naddress: 127.0.0.1:9001\n")
    (directory / "two.yaml").write_text("agents:\n  - {id: two, address: 127.0.0.1:9002}\n")
    (directory / "bad.yaml").write_text("id: bad\nadress: 127.0.0.1:9003\n")
    config_file = tmp_path / "colony.yaml"
    config_file.write_text(
        f"agents:\n  - {{id: zero, address: '127.0.0.1:9000'}}\nagents_dir: {directory}\n"
        "retention: {traces: 2d}\npoll: {interval: 5s, concurrency: 2}\n"
    )
    config = load_colony_config(config_file)
    assert (
        config.poll.interval == 5 and config.retention["traces"] == 2 * 86400 and config.retention["http"] == 30 * 86400
    )
    agents, problems = all_agents(config)
    assert sorted(a.id for a in agents) == ["one", "two", "zero"]
    assert len(problems) == 1 and "bad.yaml:2: unknown key 'adress'" in problems[0]
    config_file.write_text("poll: {intervall: 5s}\n")
    with pytest.raises(ConfigError, match="did you mean 'interval'"):
        load_colony_config(config_file)
    with pytest.raises(ConfigError, match="not on loopback"):
        ColonyConfig.from_dict({"agents": [{"id": "x", "address": "10.1.2.3:9001"}]}, "t")
    with pytest.raises(ConfigError, match="listed twice"):
        ColonyConfig.from_dict({"agents": [{"id": "x", "address": "127.0.0.1:1"}] * 2}, "t")


def test_agents_dir_is_re_read_when_it_changes(tmp_path: Path) -> None:
    from coral_ebpf.colony.poller import Poller

    directory = tmp_path / "agents.d"
    directory.mkdir()
    config = ColonyConfig.from_dict(
        {
            "state_dir": str(tmp_path),
            "agents": [{"id": "static", "address": "127.0.0.1:1"}],
            "agents_dir": str(directory),
        },
        "t",
    )
    poller = Poller(config, ColonyStore(config.database))
    assert [t.id for t in poller.targets()] == ["static"]
    assert not poller.refresh_agents()  # nothing changed
    (directory / "new.yaml").write_text("id: new\naddress: 127.0.0.1:2\n")
    assert poller.refresh_agents()
    assert sorted(t.id for t in poller.targets()) == ["new", "static"]
    (directory / "new.yaml").write_text("id: new\naddress: 127.0.0.1:3\n# moved\n")
    assert poller.refresh_agents()
    assert {t.id: t.address for t in poller.targets()}["new"] == "127.0.0.1:3"
    (directory / "new.yaml").unlink()
    assert poller.refresh_agents() and [t.id for t in poller.targets()] == ["static"]
    poller.close()
    poller.store.close()


def test_downsampling_merges_histograms_exactly(tmp_path: Path) -> None:
    from coral_ebpf.query.dispatch import run_query

    store = _store(tmp_path)
    store.reset_session("a", "s1")
    base = (time.time() - 2 * 86400) // 600 * 600  # two days ago, on a 10-minute boundary
    rows: list[dict[str, Any]] = []
    for minute in range(10):  # one series, one row a minute, plus a second route every other minute
        rows.append(
            http_row(len(rows) + 1, [minute, 1, 0, 2, 0, 0, 0, 0, minute % 3], agent_id="a", at=base + 60 * minute + 30)
        )
        if minute % 2:
            rows.append(
                http_row(
                    len(rows) + 1, [0, 0, 5, 0, 0, 0, 0, 1, 0], route="/other", agent_id="a", at=base + 60 * minute + 30
                )
            )
    recent = http_row(len(rows) + 1, [1, 0, 0, 0, 0, 0, 0, 0, 0], agent_id="a")
    store.store("a", "s1", {"http": [*rows, recent]}, {"http": len(rows) + 1})
    params = {"since": 3 * 86400}
    before = run_query(store.cursor(), "http", params)
    result = store.downsample(after=86400, resolution=300)
    assert result["http"] == (15, 4)  # 10 + 5 rows into 2 buckets per route
    after = run_query(store.cursor(), "http", params)
    assert after["rows"] == before["rows"] and after["overall"] == before["overall"]
    row = store.cursor().execute("SELECT count(*) FROM beyla_http_metrics").fetchone()
    assert row is not None and row[0] == 5  # the recent row stays as it was
    assert store.downsample(after=86400, resolution=300)["http"] == (0, 0)  # nothing new to merge
    store.close()


def test_fleet_queries_refuse_what_the_colony_does_not_pull(tmp_path: Path) -> None:
    from coral_ebpf.colony.queries import fleet_query
    from coral_ebpf.query.params import QueryError

    store = _store(tmp_path)
    with pytest.raises(QueryError, match="'messaging' is not pulled"):
        fleet_query(store.cursor(), "messaging", {})
    store.reset_session("a", "s1")
    store.reset_session("b", "s1")
    store.store("a", "s1", {"http": [http_row(1, [4, 0, 0, 0, 0, 0, 0, 0, 0], agent_id="a")]}, {"http": 1})
    store.store("b", "s1", {"http": [http_row(1, [0, 0, 0, 0, 0, 0, 0, 0, 4], agent_id="b")]}, {"http": 1})
    result = fleet_query(store.cursor(), "http", {"since": "1h"})
    assert result["overall"]["requests"] == 8
    assert result["overall"]["p50_ms"] == 5.0  # the merged histogram's median, not the mean of 2.5 and 1000
    assert [(e["agent"], e["requests"]) for e in result["by_agent"]] == [("a", 4), ("b", 4)]
    only_b = fleet_query(store.cursor(), "http", {"since": "1h", "agent": "b*"})
    assert only_b["overall"]["requests"] == 4 and [e["agent"] for e in only_b["by_agent"]] == ["b"]
    store.close()


def test_an_exponential_row_goes_out_folded_into_the_default_bounds() -> None:
    from coral_ebpf.storage.exponential import DEFAULT_DURATION_BOUNDS

    row = http_row(5, [4])
    # Scale 0: index -9 is (1.95, 3.9] ms, index 3 is (8, 16] s.
    row.update(
        bounds_s=[],
        exp_scale=0,
        exp_zero_count=0,
        exp_zero_threshold_s=0.0,
        exp_positive_offset=-9,
        exp_positive_counts=[3] + [0] * 11 + [1],
        exp_negative_offset=0,
        exp_negative_counts=[],
    )
    message = ENCODERS["http"](row)
    decoded = DECODERS["http"](type(message).FromString(message.SerializeToString()), "agent")
    assert decoded["bounds_s"] == list(DEFAULT_DURATION_BOUNDS)
    expected = [0] * (len(DEFAULT_DURATION_BOUNDS) + 1)
    expected[1] += 3  # (0, 5 ms]
    expected[-1] += 1  # above 10 s
    assert decoded["bucket_counts"] == expected and decoded["count"] == 4
    assert decoded["exp_scale"] is None
