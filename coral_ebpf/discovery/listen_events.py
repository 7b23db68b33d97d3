"""Loader for bpf/listen_events.bpf.c: TCP sockets entering and leaving LISTEN."""

from __future__ import annotations

from coral_ebpf.discovery.events import decode_listen_event
from coral_ebpf.discovery.program import DiscoveryProgram

decode = decode_listen_event


class ListenEventsProgram(DiscoveryProgram):
    name = "listen_events"
    tracepoints = {"sock:inet_sock_set_state": "tracepoint__sock__inet_sock_set_state"}
