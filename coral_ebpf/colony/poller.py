"""Polling: every agent, every interval, with bounded concurrency; exactly-once by checkpoint.

Per agent and cycle: ask for the rows after each type's checkpoint (pages until the agent
says no more, or `max_pages`); a session_id other than the checkpoints' means the agent
started a new database, so its checkpoints go back to 0 and the query is repeated. Seq ids
that skip a number are gaps: recorded, retried on later cycles (`gap_retries` times), then
marked permanent; a gap below the agent's oldest stored seq_id is marked expired at once
(its rows were deleted by the agent's retention before the colony read them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from coral_ebpf.colony.client import AgentClient
from coral_ebpf.colony.settings import AgentTarget, ColonyConfig, all_agents, dir_fingerprint
from coral_ebpf.colony.store import Checkpoint, ColonyStore, Gap
from coral_ebpf.errors import CoralError
from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi.convert import DECODERS
from coral_ebpf.storage.pull import PULL_TABLES

log = logging.getLogger(__name__)

_MESSAGES = {"http": "http_metrics", "grpc": "grpc_metrics", "sql": "sql_metrics", "traces": "trace_spans"}
_METRIC_TYPES = {"http": pb.EBPF_METRIC_TYPE_HTTP, "grpc": pb.EBPF_METRIC_TYPE_GRPC, "sql": pb.EBPF_METRIC_TYPE_SQL}
_NO_MORE = 2**64 - 1  # a start seq id past every row: "nothing of this type"


@dataclass
class AgentState:
    """What the colony knows about one agent's polling (also kept in colony_agents)."""

    agent_id: str
    address: str
    session_id: str | None = None
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    rows_stored: int = 0
    lag_rows: int | None = None
    newest_row: float | None = None
    polls: int = 0


@dataclass(frozen=True)
class PollResult:
    agent_id: str
    ok: bool
    rows: int
    seconds: float
    error: str | None = None


@dataclass
class Counters:
    cycles: int = 0
    last_cycle_seconds: float = 0.0
    rows_stored: int = 0
    polls_failed: int = 0
    gaps_found: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PULL_TABLES, 0))


def _start(checkpoints: dict[str, Checkpoint], kind: str) -> int:
    checkpoint = checkpoints.get(kind)
    return checkpoint.last_seq_id if checkpoint is not None else 0


def find_gaps(
    kind: str, last_seq_id: int, seq_ids: Sequence[int], agent_min_seq_id: int
) -> list[tuple[str, int, int, str, str | None]]:
    """The seq id ranges missing between `last_seq_id` and the returned `seq_ids` (ascending).

    A range the agent no longer holds (below its smallest stored seq id) is `expired`; the rest
    is `open` and will be asked for again.
    """
    gaps: list[tuple[str, int, int, str, str | None]] = []
    expected = last_seq_id + 1
    for seq_id in seq_ids:
        if seq_id > expected:
            first, last = expected, seq_id - 1
            if agent_min_seq_id and first < agent_min_seq_id:
                expired_to = min(last, agent_min_seq_id - 1)
                gaps.append((kind, first, expired_to, "expired", "deleted by the agent's retention before it was read"))
                first = expired_to + 1
            if first <= last:
                gaps.append((kind, first, last, "open", None))
        expected = max(expected, seq_id + 1)
    return gaps


class Poller:
    """Runs poll cycles over the configured agents until stopped."""

    def __init__(self, config: ColonyConfig, store: ColonyStore) -> None:
        self.config = config
        self.store = store
        self.counters = Counters()
        self.problems: list[str] = []
        self._targets: dict[str, AgentTarget] = {}
        self._clients: dict[str, AgentClient] = {}
        self._states: dict[str, AgentState] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(max_workers=config.poll.concurrency, thread_name_prefix="colony-poll")
        self._load_states()
        self.refresh_agents()

    def _load_states(self) -> None:
        rows = (
            self.store.cursor()
            .execute(
                "SELECT agent_id, address, session_id, last_attempt, last_success, last_error, consecutive_failures, "
                "rows_stored, lag_rows, newest_row FROM colony_agents"
            )
            .fetchall()
        )
        for row in rows:
            self._states[row[0]] = AgentState(*row)

    # ------------------------------------------------------------------ agents

    def refresh_agents(self, force: bool = False) -> bool:
        """Re-read agents_dir when its files changed; True when the agent list was (re)loaded."""
        fingerprint = dir_fingerprint(self.config.agents_dir)
        if not force and fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        targets, problems = all_agents(self.config)
        for problem in problems:
            log.error("agent file rejected", extra={"fields": {"problem": problem}})
        with self._lock:
            self.problems = problems
            new = {target.id: target for target in targets}
            for agent_id, client in list(self._clients.items()):
                if new.get(agent_id) != client.target:
                    client.close()
                    del self._clients[agent_id]
            self._targets = new
            for target in targets:
                state = self._states.setdefault(target.id, AgentState(target.id, target.address))
                state.address = target.address
        log.info("agents loaded", extra={"fields": {"agents": len(targets), "problems": len(problems)}})
        return True

    def targets(self) -> list[AgentTarget]:
        with self._lock:
            return list(self._targets.values())

    def _client(self, target: AgentTarget) -> AgentClient:
        with self._lock:
            client = self._clients.get(target.id)
            if client is None:
                client = AgentClient(target, self.config.poll.timeout)
                self._clients[target.id] = client
            return client

    # ------------------------------------------------------------------ one agent

    def poll_agent(self, target: AgentTarget) -> PollResult:
        started = time.monotonic()
        state = self._states.setdefault(target.id, AgentState(target.id, target.address))
        state.last_attempt = time.time()
        try:
            rows = self._poll(target, state)
        except Exception as exc:  # one agent's failure (network, bad data, a store error) must not stop the cycle
            if not isinstance(exc, grpc.RpcError | CoralError):
                log.exception("poll failed unexpectedly", extra={"fields": {"agent": target.id}})
            error = _describe(exc)
            state.last_error = error
            state.consecutive_failures += 1
            self.counters.polls_failed += 1
            log.warning("poll failed", extra={"fields": {"agent": target.id, "error": error}})
            self._persist(state)
            return PollResult(target.id, False, 0, time.monotonic() - started, error)
        state.last_success = time.time()
        state.last_error = None
        state.consecutive_failures = 0
        state.polls += 1
        self._persist(state)
        return PollResult(target.id, True, rows, time.monotonic() - started)

    def _persist(self, state: AgentState) -> None:
        self.store.record_poll(
            state.agent_id,
            state.address,
            session_id=state.session_id,
            last_attempt=state.last_attempt,
            last_success=state.last_success,
            last_error=state.last_error,
            consecutive_failures=state.consecutive_failures,
            rows_stored=state.rows_stored,
            lag_rows=state.lag_rows,
            newest_row=state.newest_row,
        )

    def _request(self, checkpoints: dict[str, Checkpoint]) -> pb.QueryEbpfMetricsRequest:
        return pb.QueryEbpfMetricsRequest(
            include_traces=True,
            max_records=self.config.poll.max_records,
            http_start_seq_id=_start(checkpoints, "http"),
            grpc_start_seq_id=_start(checkpoints, "grpc"),
            sql_start_seq_id=_start(checkpoints, "sql"),
            traces_start_seq_id=_start(checkpoints, "traces"),
        )

    def _poll(self, target: AgentTarget, state: AgentState) -> int:
        client = self._client(target)
        checkpoints = self.store.checkpoints(target.id)
        # Gaps found by earlier polls are retried after this one's pages; a gap found now waits a
        # poll interval first (rows in flight on the agent have then committed).
        sessions = {cp.session_id for cp in checkpoints.values()}
        pending = self.store.open_gaps(target.id, sessions.pop()) if len(sessions) == 1 else []
        stored = 0
        pages = 0
        while pages < self.config.poll.max_pages:
            response = client.query(self._request(checkpoints))
            if response.agent_id and response.agent_id != target.id:
                raise CoralError(f"{target.address} answers as agent {response.agent_id!r}, not {target.id!r}")
            session = response.session_id
            if not checkpoints or any(cp.session_id != session for cp in checkpoints.values()):
                if checkpoints:
                    log.warning(
                        "agent started a new database: checkpoints reset",
                        extra={"fields": {"agent": target.id, "session": session}},
                    )
                self.store.reset_session(target.id, session)
                restarted = bool(checkpoints)
                checkpoints = self.store.checkpoints(target.id)
                state.session_id = session
                if restarted:
                    continue  # the response answered the old checkpoints: ask again from 0
            pages += 1
            batches, new_checkpoints, gaps = self._decode(target.id, response, checkpoints)
            inserted = self.store.store(target.id, session, batches, new_checkpoints, gaps)
            self._count(batches, inserted, gaps)
            state.rows_stored += inserted
            stored += inserted
            checkpoints = {kind: Checkpoint(session, last) for kind, last in new_checkpoints.items()}
            if not response.more:
                break
        state.session_id = state.session_id or (next(iter(checkpoints.values())).session_id if checkpoints else None)
        stored += sum(self._retry_gap(target, client, gap) for gap in pending)
        self._update_lag(client, state, checkpoints)
        return stored

    def _decode(
        self, agent_id: str, response: pb.QueryEbpfMetricsResponse, checkpoints: dict[str, Checkpoint]
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int], list[tuple[str, int, int, str, str | None]]]:
        batches: dict[str, list[dict[str, Any]]] = {}
        new_checkpoints: dict[str, int] = {}
        gaps: list[tuple[str, int, int, str, str | None]] = []
        for kind, repeated in _MESSAGES.items():
            decode = DECODERS[kind]
            rows = [decode(message, agent_id) for message in getattr(response, repeated)]
            last = _start(checkpoints, kind)
            batches[kind] = rows
            if rows:
                gaps += find_gaps(kind, last, [row["seq_id"] for row in rows], getattr(response, f"{kind}_min_seq_id"))
                last = max(last, rows[-1]["seq_id"])
            new_checkpoints[kind] = last
        return batches, new_checkpoints, gaps

    def _count(self, batches: dict[str, list[dict[str, Any]]], inserted: int, gaps: list[Any]) -> None:
        with self._lock:
            self.counters.rows_stored += inserted
            self.counters.gaps_found += len(gaps)
            for kind, rows in batches.items():
                self.counters.by_kind[kind] += len(rows)
        for kind, first, last, gap_state, reason in gaps:
            log.warning(
                "sequence gap",
                extra={"fields": {"type": kind, "from": first, "to": last, "state": gap_state, "reason": reason}},
            )

    def _retry_gap(self, target: AgentTarget, client: AgentClient, gap: Gap) -> int:
        size = gap.to_seq_id - gap.from_seq_id + 1
        request = pb.QueryEbpfMetricsRequest(
            max_records=min(size, 50_000),
            http_start_seq_id=_NO_MORE,
            grpc_start_seq_id=_NO_MORE,
            sql_start_seq_id=_NO_MORE,
        )
        if gap.data_type == "traces":
            request.include_traces = True
            request.traces_start_seq_id = gap.from_seq_id - 1
            request.metric_types.append(pb.EBPF_METRIC_TYPE_HTTP)
        else:
            request.metric_types.append(_METRIC_TYPES[gap.data_type])
            setattr(request, f"{gap.data_type}_start_seq_id", gap.from_seq_id - 1)
        response = client.query(request)
        if response.session_id != gap.session_id:
            return 0  # the next poll resets this agent's checkpoints and abandons the gap
        decode = DECODERS[gap.data_type]
        rows = [decode(m, target.id) for m in getattr(response, _MESSAGES[gap.data_type])]
        inside = [row for row in rows if gap.from_seq_id <= row["seq_id"] <= gap.to_seq_id]
        agent_min = getattr(response, f"{gap.data_type}_min_seq_id")
        if len(inside) == size:
            new_state, reason = "recovered", None
        elif agent_min and gap.to_seq_id < agent_min:
            new_state, reason = "expired", "deleted by the agent's retention before it was read"
        elif gap.retries + 1 >= self.config.poll.gap_retries:
            new_state = "permanent"
            reason = f"{size - len(inside)} seq ids never appeared on the agent (a failed write burns seq ids)"
        else:
            new_state, reason = "open", None
        inserted = self.store.fill_gap(target.id, gap, inside, new_state, reason)
        if new_state != "open":
            log.info(
                "gap closed",
                extra={
                    "fields": {
                        "agent": target.id,
                        "type": gap.data_type,
                        "from": gap.from_seq_id,
                        "to": gap.to_seq_id,
                        "state": new_state,
                        "rows": inserted,
                    }
                },
            )
        return inserted

    def _update_lag(self, client: AgentClient, state: AgentState, checkpoints: dict[str, Checkpoint]) -> None:
        info = client.info()
        lag = 0
        newest = 0
        for data in info.data:
            lag += max(0, data.max_seq_id - _start(checkpoints, data.type))
            newest = max(newest, data.newest_unix_nano)
        state.lag_rows = lag
        state.newest_row = newest / 1e9 if newest else None

    # ------------------------------------------------------------------ cycles

    def cycle(self) -> list[PollResult]:
        """Poll every agent once (at most poll.concurrency at a time)."""
        started = time.monotonic()
        results = list(self._pool.map(self.poll_agent, self.targets()))
        with self._lock:
            self.counters.cycles += 1
            self.counters.last_cycle_seconds = time.monotonic() - started
        return results

    def states(self) -> dict[str, AgentState]:
        with self._lock:
            return {agent_id: replace(state) for agent_id, state in self._states.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        return f"{name}: {details}"
    return str(exc)
