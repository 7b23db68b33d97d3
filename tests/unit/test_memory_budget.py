"""The memory budget: accounting of data in flight, refusals as 429, the status it reports."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.consumer import ConsumeResult, QueueFullError, SerializedTracesConsumer
from coral_ebpf.memory.budget import MemoryBudget, MemoryBudgetExceededError, process_memory
from coral_ebpf.memory.consumer import BudgetedConsumer
from tests.helpers.beyla_otlp import beyla_resource, http_server_span, new_ids, trace_request
from tests.helpers.datapath import data_path

MiB = 1024 * 1024


def test_requests_are_refused_before_data_in_flight_passes_its_share() -> None:
    queued = [0]
    budget = MemoryBudget(256 * MiB, 96 * MiB, lambda: queued[0])
    budget.in_flight_limit = 10 * MiB
    with budget.reserve(6 * MiB):
        with pytest.raises(MemoryBudgetExceededError, match="memory budget"), budget.reserve(6 * MiB):
            pass
        with budget.reserve(3 * MiB):
            pass
    queued[0] = 9 * MiB  # batches accepted and not yet written count too
    with pytest.raises(MemoryBudgetExceededError), budget.reserve(2 * MiB):
        pass
    queued[0] = 0
    with budget.reserve(50 * MiB):  # alone, even a request larger than the share goes through
        pass
    assert budget.refusals == 2
    assert budget.status()["in_flight_bytes"] == 0


def test_status_reports_rss_idle_peak_and_the_split() -> None:
    budget = MemoryBudget(256 * MiB, 96 * MiB, lambda: 0)
    budget.calibrate()
    status = budget.status()
    memory = process_memory()
    assert status["limit_bytes"] == 256 * MiB and status["duckdb_share_bytes"] == 96 * MiB
    assert status["idle_rss_bytes"] > 0 and status["peak_rss_bytes"] >= status["rss_bytes"] > 0
    assert status["anon_rss_bytes"] + status["file_rss_bytes"] <= memory["rss"] * 2
    assert status["in_flight_limit_bytes"] >= 16 * MiB


def test_the_consumer_answers_429_when_the_budget_is_spent(tmp_path: Path) -> None:
    with data_path(tmp_path) as (storage, processor):
        budget = MemoryBudget(256 * MiB, 96 * MiB, lambda: storage.bytes_in_flight)
        budget.in_flight_limit = 1 * MiB
        consumer = BudgetedConsumer(processor, budget, retry_after=2.0)
        assert isinstance(consumer, SerializedTracesConsumer), "the fast path for raw trace bodies stays"
        spans = [http_server_span(*new_ids(), start_ns=1_700_000_000_000_000_000, duration_ns=1) for _ in range(2000)]
        body = trace_request(beyla_resource("shop"), spans).SerializeToString()
        entered, release = threading.Event(), threading.Event()
        real = processor.consume_traces_serialized

        def slow(payload: bytes) -> ConsumeResult:
            entered.set()
            release.wait(10)
            return real(payload)

        processor.consume_traces_serialized = slow  # type: ignore[method-assign,assignment]
        first = threading.Thread(target=consumer.consume_traces_serialized, args=(body,))
        first.start()
        assert entered.wait(10)
        with pytest.raises(QueueFullError, match="memory budget") as caught:
            consumer.consume_traces_serialized(body)
        assert caught.value.retry_after == 2.0
        release.set()
        first.join(10)
        storage.flush()
        consumer.consume_traces_serialized(body)  # room again once written


def test_limits_memory_must_hold_duckdb_and_the_agent() -> None:
    with pytest.raises(Exception, match=r"limits\.memory .* storage\.memory_limit"):
        parse_config_text("limits:\n  memory: 128MiB\nstorage:\n  memory_limit: 96MiB\n")
    config = parse_config_text("limits:\n  memory: 512MiB\nstorage:\n  memory_limit: 256MiB\n")
    assert config.limits.memory == 512 * MiB


def test_a_held_body_grows_alone_past_the_share_but_not_next_to_others() -> None:
    budget = MemoryBudget(256 * MiB, 96 * MiB, lambda: 0)
    budget.in_flight_limit = 10 * MiB
    alone = budget.hold(4 * MiB)
    alone.grow(20 * MiB)  # nothing else in flight: one large body is let through
    assert budget.status()["in_flight_bytes"] == 24 * MiB
    alone.release()
    first = budget.hold(6 * MiB)
    second = budget.hold(1 * MiB)
    with pytest.raises(MemoryBudgetExceededError):
        second.grow(4 * MiB)
    assert budget.status()["in_flight_bytes"] == 7 * MiB, "a refused growth holds nothing more"
    first.release()
    second.release()
    second.release()  # idempotent
    assert budget.status()["in_flight_bytes"] == 0


def test_rss_over_the_high_water_is_trimmed_and_measured_again_before_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import coral_ebpf.memory.budget as budget_module

    resident = [240 * MiB]  # over 3/4 of 256 MiB while something is in flight
    trims: list[float] = []
    now = [100.0]

    def trim() -> None:
        trims.append(now[0])
        resident[0] = after_trim[0]

    after_trim = [120 * MiB]  # free heap glibc still held: the trim hands it back
    monkeypatch.setattr(budget_module, "anonymous_rss", lambda: resident[0])
    monkeypatch.setattr(budget_module, "trim_heap", trim)
    budget = MemoryBudget(256 * MiB, 96 * MiB, lambda: 1 * MiB, clock=lambda: now[0])
    budget.in_flight_limit = 64 * MiB
    with budget.reserve(1 * MiB):
        pass
    assert trims == [100.0] and budget.refusals == 0

    resident[0] = after_trim[0] = 240 * MiB  # really used: the trim does not help, the request is refused
    now[0] += 0.3
    with pytest.raises(MemoryBudgetExceededError, match=r"near limits\.memory"), budget.reserve(1 * MiB):
        pass
    now[0] += 0.1  # trims are at most 0.2 s apart: this refusal does not trim again
    with pytest.raises(MemoryBudgetExceededError), budget.reserve(1 * MiB):
        pass
    assert trims == [100.0, 100.3] and budget.refusals == 2
